"""Resumable run directories, shared by the search loop (``search/enas.py``) and the trainer
(``training/trainer.py``).

* :class:`RunDir`: the metric files (JSON lines appended row by row; on resume cut back to the sizes the
  checkpoint recorded, so a killed run never duplicates a row), the format-and-version record that every
  checkpoint and config file carries, and the TensorBoard writer.
* :class:`RngState`: torch's global generator (dropout, drop-path draw from it) and the run device's CUDA
  generator, captured into a checkpoint and restored from it. One CUDA convention: the generator of the
  run's own device (``Runtime.device``), not every visible GPU's.
* :func:`merge_resume` and :func:`config_differences`: what a resumed run may change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from musicnas.runtime import MusicnasError, Runtime
from musicnas.utils.io import disk_full_guard, ensure_dir


class RunDir:
    """One run's folder: metric files, format records, the TensorBoard writer.

    ``writes=False`` (the ranks > 0 of a data-parallel run, ``musicnas.distributed``): every method that
    would change the folder does nothing, so only rank 0 writes."""

    def __init__(self, root: str | os.PathLike, metric_files: Sequence[str] = (), writes: bool = True):
        self.root = Path(root)
        self.metric_files = tuple(metric_files)
        self.writes = writes
        self.writer = None

    # -- metric files ----------------------------------------------------------------------------------
    def reset_metrics(self) -> None:
        """Empty metric files for a new run."""
        if not self.writes:
            return
        ensure_dir(self.root, "run folder")
        for name in self.metric_files:
            (self.root / name).write_text("")

    def append(self, name: str, row: dict) -> None:
        if not self.writes:
            return
        # a row cut short by a full disk is dropped on resume (the checkpoint's metric sizes)
        with disk_full_guard(self.root / name), open(self.root / name, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def metric_sizes(self) -> dict[str, int]:
        """The metric files' sizes: a checkpoint records them as its position in each file."""
        return {
            name: (self.root / name).stat().st_size if (self.root / name).exists() else 0
            for name in self.metric_files
        }

    def truncate_metrics(self, sizes: dict) -> None:
        """Drops rows written after the checkpoint, so a resumed run never duplicates a row."""
        if not self.writes:
            return
        for name in self.metric_files:
            path = self.root / name
            size = int(sizes.get(name, 0))
            if path.exists() and path.stat().st_size > size:
                with open(path, "r+b") as fh:
                    fh.truncate(size)
            elif not path.exists() and size:
                raise MusicnasError(
                    f"{path} is missing but the checkpoint expects {size} bytes of it; start a new run"
                )

    # -- format records --------------------------------------------------------------------------------
    @staticmethod
    def record(fmt: str, version: int, **body) -> dict:
        """A checkpoint or config body stamped with its format and version."""
        return {"format": fmt, "version": int(version), **body}

    @staticmethod
    def check_record(record, fmt: str, version: int, where, fix: str) -> dict:
        """``record`` if it carries ``fmt``/``version``; else a MusicnasError naming ``where`` and ``fix``."""
        if not isinstance(record, dict) or record.get("format") != fmt or record.get("version") != version:
            got = record.get("format") if isinstance(record, dict) else type(record).__name__
            got_version = record.get("version") if isinstance(record, dict) else None
            raise MusicnasError(
                f"{where} is not a {fmt} record of version {version} (format {got!r}, version "
                f"{got_version!r}); {fix}"
            )
        return record

    # -- TensorBoard -----------------------------------------------------------------------------------
    def open_writer(self, purge_step: int | None) -> None:
        if not self.writes:
            return
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events logged after the checkpoint by a killed run
        self.writer = SummaryWriter(log_dir=str(self.root / "tb"), purge_step=purge_step)

    def scalars(self, prefix: str, row: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key not in ("epoch", "step", "phase") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class RngState:
    """torch's global generator and the run device's CUDA generator, for checkpoints."""

    @staticmethod
    def capture(rt: Runtime) -> dict:
        return {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(rt.device) if rt.is_cuda else None,
        }

    @staticmethod
    def restore(state: dict, rt: Runtime) -> None:
        torch.set_rng_state(state["torch_rng"])
        cuda = state.get("cuda_rng")
        if isinstance(cuda, (list, tuple)):  # search checkpoints before 0.x held every GPU's state
            cuda = cuda[rt.device.index or 0] if rt.is_cuda and cuda else None
        if rt.is_cuda and cuda is not None:
            torch.cuda.set_rng_state(cuda, rt.device)


def config_differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """``"key: checkpoint A, now B"`` for every (nested) key whose value differs."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return out


def merge_resume(saved: dict, given: dict | None, resumable: Sequence[str], where) -> dict:
    """The settings of a resumed run: ``saved`` with the ``resumable`` keys that ``given`` sets.

    ``given`` holds this invocation's settings; a resumable key given as None keeps the saved value.
    Any other key of ``given`` whose value differs from the saved one is refused with a MusicnasError
    that names it and says what may change."""
    merged = dict(saved)
    if not given:
        return merged
    differing = [k for k, v in given.items() if k not in resumable and k in saved and saved[k] != v]
    if differing:
        raise MusicnasError(
            f"cannot resume {where} with different settings for: {', '.join(differing)} "
            f"(only {', '.join(resumable)} may change); drop those options"
        )
    merged.update({k: given[k] for k in resumable if given.get(k) is not None})
    return merged
