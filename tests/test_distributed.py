"""Data-parallel runs (musicnas.distributed): 2 gloo processes equal 1 process with the same global batch.

One module fixture launches the 2-process work once (torch.multiprocessing spawn on 127.0.0.1: a search, a
search stopped by max_steps and resumed, a 1-process checkpoint resumed in 2 processes, a training), so
the tests pay for one start-up of two interpreters; the torchrun CLI path is tested separately with a real
kill -9.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from musicnas import distributed, runtime
from musicnas.runtime import MusicnasError, Runtime
from musicnas.search.enas import run_search
from musicnas.spaces.macro import MacroSpace
from musicnas.spaces.macro.fixed_net import FixedMacroNet
from musicnas.training.augment import AugmentConfig
from musicnas.training.trainer import TrainConfig, Training

sys.path.insert(0, str(Path(__file__).parent))
from test_search_loop import TinyData, tiny_config  # noqa: E402

WORLD = 2
SEARCH = {"epochs": 2}  # two rounds of shared-weight steps and controller updates; 5 child steps each
TRAIN_CONFIG = TrainConfig(epochs=2, batch_size=8, patience=0, augment=AugmentConfig(mixup_alpha=0.4))
# Relative tolerance of per-step training losses, 1 vs 2 processes. The two runs do the same arithmetic in
# another order: batch-norm statistics and gradients are sums of two half-batch sums instead of one, and
# a convolution over 4 clips may block its loops differently from one over 8. float32 rounding (~1e-7
# relative per operation) then compounds through the SGD steps; measured here: <1e-6 after 10 steps.
LOSS_RTOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo", MUSICNAS_NO_REEXEC="1",
    )  # fmt: skip


def _train_losses(out: Path, rt: Runtime) -> dict:
    """A tiny training with augmentation and mixup; every step's global-batch loss."""
    data = TinyData(shape=(1, 16, 16))
    torch.manual_seed(7)
    model = FixedMacroNet(MacroSpace(num_layers=2, num_branches=4, channels=4).sample(3), 1, 3, 4, 0.0)
    steps: list[float] = []
    training = Training(model, data, out, TRAIN_CONFIG, rt, seed=7, show_progress=False,
                        on_step=lambda row: steps.append(row["loss"]))  # fmt: skip
    training.start()
    history = [training.run_epoch() for _ in range(TRAIN_CONFIG.epochs)]
    return {"steps": steps, "val_loss": [h["val_loss"] for h in history]}


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    _rank_env(rank, world, port)
    torch.set_num_threads(1)
    tmp_path = Path(tmp)
    rt = distributed.init_from_env(Runtime(torch.device("cpu"), 1), threads_given=True, quiet_followers=False)
    data = TinyData()
    run_search(tiny_config(**SEARCH), data, tmp_path / "search_2p", rt)
    run_search(tiny_config(**SEARCH, max_steps=7), data, tmp_path / "stopped_2p", rt)
    distributed.barrier()
    if distributed.is_main():  # a copy of the 2-process checkpoint for the parent to resume in 1 process
        shutil.copytree(tmp_path / "stopped_2p", tmp_path / "stopped_2p_for_1p")
    run_search(None, data, tmp_path / "stopped_2p", rt, resume=True)
    run_search(None, data, tmp_path / "stopped_1p", rt, resume=True)  # stopped by the parent, 1 process
    result = _train_losses(tmp_path / "train_2p", rt)
    (tmp_path / f"train_2p_rank{rank}.json").write_text(json.dumps(result))
    distributed.shutdown()


def _arch(run_dir: Path) -> dict:
    return json.loads((run_dir / "arch.json").read_text())


def _rows(run_dir: Path, name: str = "metrics_steps.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    torch.set_num_threads(1)
    rt = Runtime(torch.device("cpu"), 1)
    data = TinyData()
    run_search(tiny_config(**SEARCH), data, tmp / "search_1p", rt)
    run_search(tiny_config(**SEARCH, max_steps=7), data, tmp / "stopped_1p", rt)
    one = _train_losses(tmp / "train_1p", rt)
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp)), nprocs=WORLD, join=True)
    run_search(None, data, tmp / "stopped_2p_for_1p", rt, resume=True)
    two = [json.loads((tmp / f"train_2p_rank{r}.json").read_text()) for r in range(WORLD)]
    runtime.set_deterministic(False)
    return tmp, one, two


def test_two_processes_derive_the_same_architecture_as_one(runs):
    tmp, _, _ = runs
    one, two = tmp / "search_1p", tmp / "search_2p"
    assert _arch(two) == _arch(one)
    cand_1 = [c["arch"] for c in json.loads((one / "candidates.json").read_text())["candidates"]]
    cand_2 = [c["arch"] for c in json.loads((two / "candidates.json").read_text())["candidates"]]
    assert cand_2 == cand_1
    rows_1, rows_2 = _rows(one), _rows(two)
    # only rank 0 wrote: one row per step, not two
    assert len(rows_2) == len(rows_1)
    child_1 = [r for r in rows_1 if r["phase"] == "child"]
    child_2 = [r for r in rows_2 if r["phase"] == "child"]
    # the same architecture trained at every step, on the same global batches: equal accuracies, losses
    # equal up to float32 summation order (see LOSS_RTOL)
    assert [r["acc"] for r in child_2] == [r["acc"] for r in child_1]
    np.testing.assert_allclose([r["loss"] for r in child_2], [r["loss"] for r in child_1], rtol=LOSS_RTOL)
    ctrl_1 = [r["reward"] for r in rows_1 if r["phase"] == "controller"]
    ctrl_2 = [r["reward"] for r in rows_2 if r["phase"] == "controller"]
    assert ctrl_2 == ctrl_1  # rewards are all-reduced counts: exactly equal


def test_checkpoints_resume_across_world_sizes(runs):
    tmp, _, _ = runs
    reference = _arch(tmp / "search_1p")
    assert _arch(tmp / "stopped_2p") == reference  # 2 processes stopped, resumed in 2
    assert _arch(tmp / "stopped_2p_for_1p") == reference  # 2 processes stopped, resumed in 1
    assert _arch(tmp / "stopped_1p") == reference  # 1 process stopped, resumed in 2
    untimed = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in rows]  # noqa: E731
    assert untimed(_rows(tmp / "stopped_2p")) == untimed(_rows(tmp / "search_2p"))


def test_training_losses_match_per_step(runs):
    _, one, two = runs
    assert len(one["steps"]) == 2 * (45 // 8)
    for rank_result in two:  # every rank reports the same global-batch losses
        np.testing.assert_allclose(rank_result["steps"], one["steps"], rtol=LOSS_RTOL)
        np.testing.assert_allclose(rank_result["val_loss"], one["val_loss"], rtol=LOSS_RTOL)
    assert two[0]["steps"] == two[1]["steps"]


def test_world_size_that_does_not_divide_the_batch_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(MusicnasError, match="cannot be split evenly over 3 processes"):
        distributed.local_batch_size(8, "search batch size")
    assert distributed.local_batch_size(9) == 3


def test_shards_cover_a_batch_once_in_order(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    for n in (0, 1, 2, 7, 9):
        bounds = [distributed.shard_bounds(n, r) for r in range(3)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        sizes = [hi - lo for lo, hi in bounds]
        assert max(sizes) - min(sizes) <= 1


def _cli(*args: str, nproc: int | None = None, env: dict) -> list[str]:
    base = [sys.executable]
    if nproc is not None:
        base += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"]
    else:
        base += ["-m"]
    return [*base, "musicnas", *args]


def test_torchrun_search_killed_with_sigkill_resumes_in_two_and_in_one(tiny_cache, tmp_path):
    """The real path: `torchrun ... musicnas search`, kill -9 of the whole launch after its first
    checkpoint, then `--resume` under torchrun and in one plain process."""
    config = tmp_path / "search.json"
    config.write_text(json.dumps({
        "epochs": 3, "batch_size": 8, "controller_archs_per_update": 2, "controller_updates_per_epoch": 2,
        "derive_samples": 6, "derive_batches": 2, "derive_top_k": 2, "keep_seen": 2, "checkpoint_every_steps": 1,
        "deterministic": True, "tensorboard": False,
        "space_options": {"num_layers": 2, "channels": 4, "num_branches": 4, "whole_channels": True,
                          "stem_stride": 2},
    }))  # fmt: skip
    env = dict(os.environ, MUSICNAS_NO_REEXEC="1", GLOO_SOCKET_IFNAME="lo",
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))  # fmt: skip
    common = ["--data", str(tiny_cache.root), "--config", str(config), "--threads", "1", "--device", "cpu"]
    reference = tmp_path / "one"
    subprocess.run(_cli("search", *common, "--out", str(reference), env=env), env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli("search", *common, "--out", str(killed), nproc=2, env=env), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    ckpt = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 90
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
    proc.wait(timeout=30)
    assert ckpt.exists(), proc.stderr.read().decode()[-2000:]
    assert not (killed / "arch.json").exists(), "the run finished before it could be killed"
    in_one = tmp_path / "killed_resumed_in_one"
    shutil.copytree(killed, in_one)
    done = subprocess.run(_cli("search", "--resume", str(killed), "--threads", "1", "--device", "cpu", nproc=2,
                               env=env), env=env, capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().count("wrote ") == 1  # rank 1 prints nothing
    subprocess.run(_cli("search", "--resume", str(in_one), "--threads", "1", "--device", "cpu", env=env),
                   env=env, check=True, capture_output=True, timeout=120)  # fmt: skip
    assert _arch(killed) == _arch(reference)
    assert _arch(in_one) == _arch(reference)
