"""Accuracy of given architectures with a finished search run's shared weights.

The search network is rebuilt from the run's own ``config.json`` and given the weights of its last
checkpoint; each architecture is scored on the *whole* validation split (not the few batches deriving
uses, to keep sampling noise out of the ranking study), with the run's own scoring code and batch-norm
mode (``SearchRun.accuracy``), so the numbers are the ones the search itself would see.
"""

from __future__ import annotations

from pathlib import Path

from musicnas.runtime import MusicnasError, Runtime
from musicnas.utils.io import load_checkpoint


def shared_weight_accuracies(run_dir, archs, data, rt: Runtime, bn: str | None = None) -> list[float]:
    """Whole-validation-split accuracy of each of ``archs`` with the run's shared weights; ``bn`` scores
    in another batch-norm mode than the run's own (``search/scoring.py``: eval, batch, recalibrate)."""
    return [acc for acc, _ in shared_weight_scores(run_dir, archs, data, rt, bn)]


def shared_weight_scores(
    run_dir, archs, data, rt: Runtime, bn: str | None = None
) -> list[tuple[float, float]]:
    """(accuracy, mean cross-entropy) of each of ``archs`` on the whole validation split with the run's
    shared weights, as :func:`shared_weight_accuracies` scores them."""
    from musicnas.search.config import SearchConfig
    from musicnas.search.enas import SearchRun, load_run_config
    from musicnas.search.scoring import accuracy_and_loss_over

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if bn is not None:
        config = SearchConfig.from_dict({**config.to_dict(), "controller_bn": bn}).validate()
    search = SearchRun(config, data, run_dir, rt)
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=rt.device)
    try:
        search.model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise MusicnasError(
            f"the checkpoint of {run_dir} does not fit its own config.json ({str(exc)[:160]}); run the search again"
        ) from exc
    for arch in archs:
        if arch.space != search.space:
            raise MusicnasError(
                f"architecture of space {arch.space} cannot be scored in the search space {search.space}"
            )
    batches = [search.score_batch(indices) for indices in search.val_batches(0)]
    return [accuracy_and_loss_over(search, arch, batches) for arch in archs]
