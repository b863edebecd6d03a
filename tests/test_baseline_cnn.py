"""The hand-designed baseline: Won et al.'s short-chunk residual CNN adapted to log-mel input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.baselines.cnn import ShortChunkResCNN, block_widths
from musicnas.runtime import MusicnasError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks run fastest on one thread, and a second one only spins when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_paper_width_schedule():
    assert block_widths(128, 7) == [128, 128, 256, 256, 256, 256, 512]


@settings(deadline=None, max_examples=8)
@given(
    n_mels=st.integers(8, 80),
    frames=st.integers(5, 120),
    blocks=st.integers(1, 7),
    classes=st.integers(2, 6),
)
def test_any_input_size_gives_one_logit_per_class(n_mels, frames, blocks, classes):
    torch.manual_seed(0)
    model = ShortChunkResCNN(num_classes=classes, channels=3, num_blocks=blocks).eval()
    out = model(torch.randn(2, 1, n_mels, frames))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = ShortChunkResCNN(num_classes=3, channels=4)
    logits, aux = model.forward_train(torch.randn(4, 1, 32, 40))
    assert aux is None and model.aux_weight == 0.0
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_config_round_trip_rebuilds_the_same_network():
    torch.manual_seed(0)
    model = ShortChunkResCNN(num_classes=4, channels=5, num_blocks=4, dropout=0.3).eval()
    clone = ShortChunkResCNN.from_config(model.config()).eval()
    clone.load_state_dict(model.state_dict())
    x = torch.randn(3, 1, 24, 30)
    assert torch.allclose(model(x), clone(x))
    assert clone.config() == model.config()


def test_learns_a_separable_toy_problem():
    # class 0: energy in the low mel bands, class 1: in the high ones
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 16, 16, generator=gen) * 0.1
    y = torch.arange(16) % 2
    x[y == 0, :, :8] += 1.0
    x[y == 1, :, 8:] += 1.0
    torch.manual_seed(0)
    model = ShortChunkResCNN(num_classes=2, channels=4, num_blocks=3, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() > 0.9


def test_bad_options_are_user_errors():
    with pytest.raises(MusicnasError, match="channels"):
        ShortChunkResCNN(channels=0)
    with pytest.raises(MusicnasError, match="num_classes"):
        ShortChunkResCNN(num_classes=1)
    with pytest.raises(MusicnasError, match="input"):
        ShortChunkResCNN(channels=2)(torch.randn(1, 16, 16))


def test_bundle_of_the_cnn_loads_back_with_the_same_outputs(tmp_path):
    from musicnas.data.features import FeatureConfig
    from musicnas.export.bundle import read_bundle, save_bundle

    torch.manual_seed(0)
    model = ShortChunkResCNN(num_classes=3, channels=4, num_blocks=5, dropout=0.2).eval()
    n_mels = FeatureConfig().n_mels
    save_bundle(
        tmp_path / "model",
        model,
        None,
        FeatureConfig(),
        ["a", "b", "c"],
        [0.0] * n_mels,
        [1.0] * n_mels,
        model_spec=model.model_spec(),
    )
    loaded = read_bundle(tmp_path / "model")
    assert loaded.arch is None and loaded.spec.type == "short_chunk_res_cnn"
    x = torch.randn(2, 1, n_mels, 40)
    assert torch.allclose(loaded.model(x), model(x))
