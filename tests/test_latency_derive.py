"""Deriving for a latency target: the best-scored architecture predicted within ±10% of the target wins."""

from __future__ import annotations

from types import SimpleNamespace

from musicnas.search.derive import LATENCY_TARGET_BAND, _prefer_latency_target


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
    scored = ranked + [_cand("near_a", 1.05, 0.5), _cand("near_b", 0.95, 0.7), _cand("far", 2.0, 0.95)]
    out, band = _prefer_latency_target(_search(1.0), ranked, scored)
    assert [c["arch"].key() for c in out[:2]] == ["near_b", "near_a"]  # within ±10%, best score first
    assert [c["arch"].key() for c in out[2:]] == ["fast_off", "slow_off"]  # the rest keep their order
    assert band == {"target_ms": 1.0, "within": LATENCY_TARGET_BAND, "candidates_within": 2}


def test_nothing_within_band_takes_the_nearest_and_other_searches_are_untouched():
    ranked = [_cand("a", 1.5, 0.9), _cand("b", 1.2, 0.1)]
    out, band = _prefer_latency_target(_search(1.0), ranked, ranked + [_cand("c", 0.7, 0.99)])
    assert out[0]["arch"].key() == "b" and band["candidates_within"] == 0
    same, none = _prefer_latency_target(_search(1.0, metric="macs"), ranked, ranked)
    assert same is ranked and none is None
