"""Shipping a searched model without retraining: the sub-network bundle predicts exactly what the search
network computes for that architecture, and loads back like any bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musicnas import runtime
from musicnas.cli import main
from musicnas.export.bundle import load_bundle
from musicnas.search.config import SearchConfig
from musicnas.search.enas import run_search
from musicnas.spaces import load_arch
from musicnas.spaces.macro import MacroSearchNet
from musicnas.utils.io import load_checkpoint

TINY = dict(
    space_options={
        "num_layers": 2,
        "num_branches": 4,
        "whole_channels": True,
        "channels": 4,
        "stem_stride": 2,
    },
    epochs=1,
    batch_size=8,
    controller_archs_per_update=2,
    controller_updates_per_epoch=1,
    derive_samples=4,
    derive_batches=1,
    derive_top_k=2,
    keep_seen=1,
    tensorboard=False,
)


@pytest.fixture(scope="module")
def search_run(tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    config = SearchConfig(**TINY, data=str(tiny_cache.root)).validate()
    run_search(config, tiny_cache, out, runtime.setup("cpu", 1))
    return out


def test_extracted_bundle_equals_search_network_on_the_arch(search_run, tiny_cache, tmp_path):
    main(
        [
            "extract",
            "--run",
            str(search_run),
            "--out",
            str(tmp_path / "model"),
            "--data",
            str(tiny_cache.root),
        ]
    )
    clf = load_bundle(tmp_path / "model", device="cpu")
    arch = load_arch(search_run / "arch.json")
    assert json.loads((tmp_path / "model" / "bundle.json").read_text())["model"]["type"] == "macro_subnet"

    net = MacroSearchNet(arch.space, in_channels=1, num_classes=tiny_cache.num_classes)
    net.load_state_dict(load_checkpoint(search_run / "checkpoints" / "last.pt")["model"])
    x, _ = tiny_cache.get_batch(tiny_cache.split_indices("val"))
    with torch.no_grad():
        expected = net.eval()(x, arch)
        got = clf.model.eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # fewer weights than the whole search network: only the architecture's own
    assert sum(p.numel() for p in clf.model.parameters()) < sum(p.numel() for p in net.parameters())
    assert np.isclose(sum(clf.predict(np.zeros(16000 * 3, dtype=np.float32)).probabilities.values()), 1.0)


def test_extract_refuses_a_run_without_checkpoint(search_run, tmp_path):
    import shutil

    broken = tmp_path / "run"
    shutil.copytree(search_run, broken)
    (broken / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exc:
        main(["extract", "--run", str(broken), "--out", str(tmp_path / "m")])
    assert exc.value.code == 2
    assert not (tmp_path / "m" / "model.safetensors").exists()
