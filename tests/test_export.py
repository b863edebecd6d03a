"""ONNX and TorchScript export: outputs match PyTorch, with and without the log-mel front end."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import musicnas
from musicnas.data.features import FeatureConfig, LogMel
from musicnas.export.bundle import save_bundle
from musicnas.export.formats import DFTLogMel, export_model
from musicnas.models import ModelSpec, build_model
from musicnas.runtime import MusicnasError

CONFIG = FeatureConfig()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one torch thread beats two that contend for a busy 2-core machine (5x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _bundle(out, arch, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec.for_arch(arch, in_channels=1, num_classes=3, channels=4, dropout=0.1)
    model = build_model(spec, arch).train()
    with torch.no_grad():
        model(torch.randn(8, 1, CONFIG.n_mels, CONFIG.frames))  # non-default BN statistics
    mean = np.linspace(-70, -30, CONFIG.n_mels)
    std = np.linspace(8, 16, CONFIG.n_mels)
    save_bundle(out, model.eval(), arch, CONFIG, ["a", "b", "c"], mean, std, model_spec=spec)
    return musicnas.load(out, device="cpu")


@pytest.fixture(scope="module")
def macro_clf(tmp_path_factory):
    from musicnas.spaces.macro import MacroSpace

    arch = MacroSpace(num_layers=3, num_branches=6, channels=4).sample(2)
    return _bundle(tmp_path_factory.mktemp("macro") / "m", arch)


def _waves(n, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(CONFIG.clip_samples) / CONFIG.sample_rate
    return 0.2 * torch.sin(2 * torch.pi * 300 * t) + 0.05 * torch.randn(n, CONFIG.clip_samples, generator=g)


def test_dft_front_end_equals_logmel():
    logmel = LogMel(CONFIG)
    dft = DFTLogMel(logmel)
    x = _waves(3, 0)
    x[1] = 0.0  # silence: both floor at -100 dB
    diff = (dft(x) - logmel(x)).abs().max().item()
    assert diff < 1e-3  # dB; measured ~1e-5
    assert dft(x).shape == logmel(x).shape == (3, CONFIG.n_mels, CONFIG.frames)


@pytest.mark.parametrize("with_frontend", [False, True])
def test_onnx_matches_pytorch(macro_clf, tmp_path, with_frontend):
    out = tmp_path / "m.onnx"
    report = export_model(macro_clf, "onnx", out, with_frontend)
    assert out.is_file() and report.max_abs_diff < 1e-3
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    if with_frontend:
        x = _waves(5, 3)
        with torch.no_grad():
            expected = macro_clf.clip_logits(x).numpy()  # the Classifier's own pipeline
        got = session.run(["logits"], {"waveform": x.numpy()})[0]
    else:
        x = torch.randn(5, 1, CONFIG.n_mels, CONFIG.frames)
        with torch.no_grad():
            expected = macro_clf.model(x).numpy()
        got = session.run(["logits"], {"features": x.numpy()})[0]
    assert got.shape == (5, 3)  # a batch size the export never saw
    np.testing.assert_allclose(got, expected, atol=1e-3)


@pytest.mark.filterwarnings("ignore")  # torch.jit is deprecated in 2.13; recording its warnings costs ~10 s
@pytest.mark.parametrize("with_frontend", [False, True])
def test_torchscript_matches_pytorch(macro_clf, tmp_path, with_frontend):
    out = tmp_path / "m.pt"
    report = export_model(macro_clf, "torchscript", out, with_frontend)
    assert report.max_abs_diff < 1e-4
    loaded = torch.jit.load(str(out))
    x = _waves(4, 5) if with_frontend else torch.randn(4, 1, CONFIG.n_mels, CONFIG.frames)
    with torch.no_grad():
        expected = macro_clf.clip_logits(x) if with_frontend else macro_clf.model(x)
        torch.testing.assert_close(loaded(x), expected, atol=1e-4, rtol=1e-4)


def test_onnx_of_a_micro_network_with_aux_head(tmp_path):
    from musicnas.spaces.micro import MicroSpace

    arch = MicroSpace(num_cells=1, num_nodes=2, channels=4).sample(0)
    clf = _bundle(tmp_path / "micro", arch)
    report = export_model(clf, "onnx", tmp_path / "micro.onnx", with_frontend=True)
    assert report.max_abs_diff < 1e-3


def test_difference_above_tolerance_fails_and_writes_nothing(macro_clf, tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(MusicnasError, match="differs from PyTorch"):
        export_model(macro_clf, "onnx", out, with_frontend=True, tolerance=-1.0)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_format_and_folder_target_are_user_errors(macro_clf, tmp_path):
    with pytest.raises(MusicnasError, match="unknown export format"):
        export_model(macro_clf, "tflite", tmp_path / "x")
    with pytest.raises(MusicnasError, match="is a folder"):
        export_model(macro_clf, "onnx", tmp_path)


@pytest.mark.slow
def test_onnx_dynamo_exporter_matches_pytorch(macro_clf, tmp_path):
    # slow (torch.export tracing); the TorchScript-based exporter tests above cover the same contract
    report = export_model(macro_clf, "onnx", tmp_path / "d.onnx", with_frontend=True, dynamo=True)
    assert report.max_abs_diff < 1e-3
