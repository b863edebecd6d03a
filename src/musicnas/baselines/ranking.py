"""Ranking quality of weight sharing: does shared-weight accuracy order architectures the way
stand-alone training does?

Yu et al. (2019) and Li & Talwalkar (2019) found this correlation weak for ENAS; musicnas measures it on
the user's own data with Kendall's tau (``scipy.stats.kendalltau``, tau-b, which handles ties) and its
two-sided p-value, and writes ``ranking.json`` in the shape the report renders as a scatter plot:
``{"shared": [...], "standalone": [...], "kendall_tau": t, "p_value": p, "archs": [...]}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from scipy import stats

from musicnas.runtime import MusicnasError
from musicnas.utils.io import atomic_write_json


def kendall_tau(shared: Sequence[float], standalone: Sequence[float]) -> tuple[float | None, float | None]:
    """Kendall's tau-b between two accuracy lists and its two-sided p-value.

    Returns ``(None, None)`` when the statistic is undefined (fewer than two architectures, or one of the
    lists constant), rather than scipy's NaN, so the JSON stays valid and the report can say why."""
    if len(shared) != len(standalone):
        raise MusicnasError(
            f"ranking needs one shared-weight and one stand-alone accuracy per architecture "
            f"(got {len(shared)} and {len(standalone)})"
        )
    if len(shared) < 2:
        return None, None
    result = stats.kendalltau(list(shared), list(standalone))
    tau, p = float(result.statistic), float(result.pvalue)
    if math.isnan(tau):
        return None, None
    return tau, (None if math.isnan(p) else p)


def ranking_result(
    shared: Sequence[float], standalone: Sequence[float], archs: Sequence[dict], **extra
) -> dict:
    """The ``ranking.json`` object for n architectures (``archs`` are arch JSON dicts, same order)."""
    if len(archs) != len(shared):
        raise MusicnasError(f"ranking got {len(archs)} architectures for {len(shared)} accuracies")
    tau, p = kendall_tau(shared, standalone)
    out = {
        "shared": [float(v) for v in shared],
        "standalone": [float(v) for v in standalone],
        "kendall_tau": tau,
        "p_value": p,
        "n": len(shared),
        "archs": list(archs),
    }
    if tau is None:
        out["note"] = (
            "Kendall tau is undefined: fewer than two architectures or all accuracies equal on one axis"
        )
    out.update(extra)
    return out


def write_ranking(path: str | Path, result: dict) -> Path:
    path = Path(path)
    atomic_write_json(path, result)
    return path
