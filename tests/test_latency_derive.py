"""Deriving for a latency target: the best-scored architecture predicted within ±10% of the target wins."""

from __future__ import annotations

from types import SimpleNamespace

from musicnas.search.derive import LATENCY_TARGET_BAND, LATENCY_TARGET_INNER_BAND, _prefer_latency_target


class _Arch:
    def __init__(self, name, ms):
        self.name, self.ms = name, ms

    def key(self):
        return self.name


def _search(target, metric="latency", top_k=3):
    model = SimpleNamespace(predict=lambda arch: arch.ms)
    config = SimpleNamespace(cost_target=target, cost_metric=metric, derive_top_k=top_k)
    return SimpleNamespace(latency_model=model, config=config)


def _cand(name, ms, score):
    return {"arch": _Arch(name, ms), "score": score}


def test_within_band_beats_a_better_score_outside_and_comes_from_all_scored():
    ranked = [_cand("fast_off", 1.3, 0.9), _cand("slow_off", 0.6, 0.8)]  # the top k, both off target
    scored = ranked + [_cand("near_a", 1.06, 0.5), _cand("near_b", 0.97, 0.7), _cand("far", 2.0, 0.95)]
    out, band = _prefer_latency_target(_search(1.0), ranked, scored)
    assert [c["arch"].key() for c in out[:2]] == ["near_b", "near_a"]  # within ±10%, best score first
    assert [c["arch"].key() for c in out[2:]] == ["fast_off", "slow_off"]  # the rest keep their order
    assert band == {"target_ms": 1.0, "within": LATENCY_TARGET_BAND, "candidates_within": 2,
                    "inner": LATENCY_TARGET_INNER_BAND, "candidates_inner": 1}  # fmt: skip


def test_within_the_band_the_ones_predicted_nearer_the_target_come_first():
    """+9% with the best score loses to +3% and -4% (the table's own error is a few percent), each tier
    by score."""
    ranked = [_cand("edge", 1.09, 0.9), _cand("near_hi", 1.03, 0.6)]
    scored = ranked + [_cand("near_lo", 0.96, 0.7), _cand("edge_lo", 0.92, 0.8)]
    out, band = _prefer_latency_target(_search(1.0, top_k=4), ranked, scored)
    assert [c["arch"].key() for c in out] == ["near_lo", "near_hi", "edge", "edge_lo"]
    assert (band["candidates_within"], band["candidates_inner"]) == (4, 2)


def test_nothing_within_band_takes_the_nearest_and_other_searches_are_untouched():
    ranked = [_cand("a", 1.5, 0.9), _cand("b", 1.2, 0.1)]
    out, band = _prefer_latency_target(_search(1.0), ranked, ranked + [_cand("c", 0.7, 0.99)])
    assert out[0]["arch"].key() == "b" and band["candidates_within"] == 0
    same, none = _prefer_latency_target(_search(1.0, metric="macs"), ranked, ranked)
    assert same is ranked and none is None
