from __future__ import annotations

import os
import stat

import pytest
import torch

from musicnas.runtime import MusicnasError
from musicnas.utils.io import atomic_path, atomic_write_json, load_checkpoint, read_json, save_checkpoint


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind


def test_atomic_write_uses_umask_permissions_not_private(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_checkpoint_roundtrip_and_truncation_refused(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.arange(5.0), "epoch": 3, "rng": torch.Generator().get_state()})
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(5.0))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(MusicnasError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_checkpoint_with_pickled_code_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(MusicnasError):
        load_checkpoint(path)
    assert not marker.exists()
