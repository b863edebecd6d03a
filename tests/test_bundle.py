"""Model bundles: round trip, safe loading of tampered bundles, the Python API (musicnas.load)."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from torch import nn

import musicnas
from conftest import reseal_bundle
from musicnas.data.features import FeatureConfig
from musicnas.export.bundle import save_bundle
from musicnas.models import ModelSpec, register_model_type
from musicnas.runtime import MusicnasError
from musicnas.spaces.macro import MacroSpace

CLASSES = ["low", "mid", "high"]
CONFIG = FeatureConfig(clip_hop_seconds=3.0)  # non-overlapping clips: the counts below assume them


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one torch thread beats two that contend for a busy 2-core machine (5x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_macro(seed=0):
    arch = MacroSpace(num_layers=2, num_branches=6, channels=4).sample(seed)
    from musicnas.models import build_model

    torch.manual_seed(seed)
    spec = ModelSpec.for_arch(arch, in_channels=1, num_classes=3, channels=4, dropout=0.1)
    model = build_model(spec, arch)
    # move BN running statistics away from their defaults so a round trip that lost them would show
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 1, CONFIG.n_mels, CONFIG.frames))
    return model.eval(), arch, spec


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    model, arch, spec = _tiny_macro()
    out = tmp_path_factory.mktemp("bundle") / "model"
    mean = np.linspace(-60, -20, CONFIG.n_mels)
    std = np.linspace(5, 15, CONFIG.n_mels)
    save_bundle(out, model, arch, CONFIG, CLASSES, mean, std, {"note": "test"}, model_spec=spec)
    return out


def _copy(bundle_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


def _tone(freq, seconds=7.0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_round_trip_gives_identical_outputs_and_predictions(bundle_dir, tmp_path):
    model, arch, spec = _tiny_macro()
    clf = musicnas.load(bundle_dir, device="cpu")
    assert clf.classes == CLASSES
    assert clf.arch == arch and clf.spec.type == "macro"
    x = torch.randn(3, 1, CONFIG.n_mels, CONFIG.frames)
    with torch.no_grad():
        assert torch.equal(clf.model(x), model(x))
    wave = _tone(440.0)
    first = clf.predict(wave, top_k=3)
    # save the loaded model again and load that: predictions stay identical
    save_bundle(tmp_path / "again", clf.model, clf.arch, clf.feature_config, clf.classes, clf.mean, clf.std)
    second = musicnas.load(tmp_path / "again", device="cpu").predict(wave, top_k=3)
    assert first.probabilities == second.probabilities
    assert first.top == second.top and len(first.top) == 3
    assert first.num_clips == 2  # 7 s at a 3 s hop: two full clips, the 1 s tail is not used
    assert sum(first.probabilities.values()) == pytest.approx(1.0)


def test_predict_mean_of_clip_logits_over_waveform(bundle_dir):
    clf = musicnas.load(bundle_dir, device="cpu")
    wave = np.concatenate([_tone(220.0, 3.0), _tone(880.0, 3.0)])
    logits = clf.clip_logits(np.stack([wave[:48000], wave[48000:]])).double()
    expected = torch.softmax(logits.mean(0), 0)
    got = clf.predict(wave, top_k=1)
    assert got.num_clips == 2
    np.testing.assert_allclose([got.probabilities[c] for c in CLASSES], expected.numpy(), rtol=1e-6)
    assert got.label == CLASSES[int(expected.argmax())]


def test_predict_accepts_stereo_torch_and_other_sample_rates(bundle_dir):
    clf = musicnas.load(bundle_dir, device="cpu")
    mono16 = _tone(330.0, 6.0)
    ref = clf.predict(mono16)
    stereo = torch.from_numpy(np.stack([mono16, mono16]))
    assert clf.predict(stereo, sample_rate=16000).probabilities == pytest.approx(ref.probabilities, abs=1e-6)
    t = np.arange(int(6.0 * 32000)) / 32000
    mono32 = (0.3 * np.sin(2 * np.pi * 330.0 * t)).astype(np.float32)
    resampled = clf.predict(mono32, sample_rate=32000)
    assert resampled.num_clips == ref.num_clips
    assert resampled.probabilities == pytest.approx(ref.probabilities, abs=1e-3)
    with pytest.raises(MusicnasError, match="too short"):
        clf.predict(np.zeros(100, dtype=np.float32))
    with pytest.raises(MusicnasError, match="1-D or"):
        clf.predict(np.zeros((2, 2, 2), dtype=np.float32))


def test_file_and_waveform_predictions_agree(bundle_dir, tmp_path):
    import soundfile as sf

    clf = musicnas.load(bundle_dir, device="cpu")
    wave = _tone(500.0, 7.5)
    sf.write(tmp_path / "a.wav", wave, 16000, subtype="FLOAT")
    from_file = clf.predict(tmp_path / "a.wav")
    from_wave = clf.predict(wave)
    assert from_file.num_clips == from_wave.num_clips == 2
    assert from_file.probabilities == pytest.approx(from_wave.probabilities, abs=1e-6)
    with pytest.raises(MusicnasError, match="not found"):
        clf.predict(tmp_path / "missing.wav")


class _Marker:
    """Unpickling this creates a file: proof that a loader executed pickled code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _assert_refused(path, marker, match):
    with pytest.raises(MusicnasError, match=match):
        musicnas.load(path, device="cpu")
    assert not marker.exists(), "loading executed pickled code"


def test_pickle_in_place_of_safetensors_is_refused_without_running_it(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    marker = tmp_path / "pwned_safetensors"
    (b / "model.safetensors").write_bytes(pickle.dumps(_Marker(marker)))
    reseal_bundle(b)
    # the payload really does run when unpickled: the test would notice execution
    assert not marker.exists()
    _assert_refused(b, marker, "not a valid safetensors file")


def test_torch_pt_file_is_never_loaded(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    marker = tmp_path / "pwned_pt"
    (b / "model.safetensors").unlink()
    torch.save({"state": _Marker(marker)}, b / "model.pt")
    _assert_refused(b, marker, r"model\.pt present.*never loaded")


def test_pickle_payload_really_executes_when_unpickled(tmp_path):
    # guards the two tests above: the marker mechanism works
    marker = tmp_path / "m"
    pickle.loads(pickle.dumps(_Marker(marker))).close()
    assert marker.exists()


def test_mismatched_shapes_are_reported(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    meta = json.loads((b / "bundle.json").read_text())
    meta["model"]["channels"] = 6
    (b / "bundle.json").write_text(json.dumps(meta))
    reseal_bundle(b)
    with pytest.raises(MusicnasError, match="shape mismatches"):
        musicnas.load(b, device="cpu")


def test_class_count_must_match_the_model(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    meta = json.loads((b / "bundle.json").read_text())
    meta["classes"] = ["a", "b"]
    (b / "bundle.json").write_text(json.dumps(meta))
    reseal_bundle(b)
    with pytest.raises(MusicnasError, match="2 class names but the model has 3 outputs"):
        musicnas.load(b, device="cpu")


@pytest.mark.parametrize("missing", ["model.safetensors", "bundle.json", "arch.json"])
def test_missing_file_is_reported(bundle_dir, tmp_path, missing):
    b = _copy(bundle_dir, tmp_path)
    (b / missing).unlink()
    with pytest.raises(MusicnasError, match=missing.replace(".", r"\.")):
        musicnas.load(b, device="cpu")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: "[1, 2]", "JSON object"),
        (lambda text: text.replace("musicnas-bundle", "other"), "not a musicnas bundle"),
        (lambda text: text.replace('"version": 1', '"version": 99'), "version 99"),
        (lambda text: text.replace('"num_classes": 3', '"num_classes": "3"'), "num_classes"),
        (lambda text: text.replace('"type": "macro"', '"type": "nope"'), "unknown model type 'nope'"),
        (lambda text: text.replace('"n_mels": 64', '"n_mels": 64, "bogus": 1'), "unknown feature options"),
        (lambda text: text.replace('"mean": [', '"mean": [1.0, '), "'mean' must be 64 numbers"),
    ],
)
def test_malformed_bundle_json_is_reported(bundle_dir, tmp_path, edit, match):
    b = _copy(bundle_dir, tmp_path)
    text = (b / "bundle.json").read_text()
    (b / "bundle.json").write_text(edit(text))
    reseal_bundle(b)
    with pytest.raises(MusicnasError, match=match):
        musicnas.load(b, device="cpu")


def test_not_a_folder(tmp_path):
    with pytest.raises(MusicnasError, match="model bundle not found"):
        musicnas.load(tmp_path / "nothing", device="cpu")


def test_modules_outside_musicnas_are_never_imported(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    meta = json.loads((b / "bundle.json").read_text())
    meta["model"].update(type="evil", module="os")
    (b / "bundle.json").write_text(json.dumps(meta))
    reseal_bundle(b)
    with pytest.raises(MusicnasError, match="only musicnas modules"):
        musicnas.load(b, device="cpu")


@register_model_type("test_tiny_cnn")
def _build_tiny_cnn(arch, in_channels, num_classes, channels=None, dropout=0.0, **kwargs):
    c = channels or 3
    return nn.Sequential(
        nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes),
    )  # fmt: skip


def test_registered_non_enas_model_type_round_trips(tmp_path):
    torch.manual_seed(1)
    model = _build_tiny_cnn(None, 1, 3, channels=5).eval()
    spec = ModelSpec.for_type("test_tiny_cnn", in_channels=1, num_classes=3, channels=5)
    save_bundle(tmp_path / "m", model, None, CONFIG, CLASSES, np.zeros(64), np.ones(64), model_spec=spec)
    meta = json.loads((tmp_path / "m" / "bundle.json").read_text())
    assert meta["model"]["type"] == "test_tiny_cnn" and meta["model"]["space"] is None
    assert not (tmp_path / "m" / "arch.json").exists()
    clf = musicnas.load(tmp_path / "m", device="cpu")
    x = torch.randn(2, 1, 64, 94)
    with torch.no_grad():
        assert torch.equal(clf.model(x), model(x))


def test_save_refuses_a_spec_that_does_not_rebuild_the_model(tmp_path):
    model = _build_tiny_cnn(None, 1, 3, channels=5)
    spec = ModelSpec.for_type("test_tiny_cnn", in_channels=1, num_classes=3, channels=4)
    with pytest.raises(MusicnasError, match="do not fit"):
        save_bundle(tmp_path / "m", model, None, CONFIG, CLASSES, np.zeros(64), np.ones(64), model_spec=spec)
    assert not (tmp_path / "m" / "model.safetensors").exists()
