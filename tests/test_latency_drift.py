"""Drift-corrected latency: a network measured interleaved with reference networks of known latency (the
table's fitting networks) and corrected by their slowdown. Fake machines (a fake measure function, a
fake clock) with a known drift stand in for the VM, so the figures asserted are exact."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from musicnas.latency import measure as measure_module
from musicnas.latency.measure import (
    Measurement,
    deployed_from_arch,
    drift_factor,
    measure_drift_corrected,
    time_interleaved,
)
from musicnas.latency.table import measure_against_table, model_for_search, reference_archs, save_model
from musicnas.runtime import MusicnasError
from test_latency import INPUT, SPACE, hand_table
from test_search_cli import run_cli


def _net(ms: float, name: str = ""):
    return SimpleNamespace(true_ms=ms, name=name)


def _measurement(latency_ms: float) -> Measurement:
    return Measurement(latency_ms, latency_ms, 0.0, 10, 0, "onnxruntime", 1, {}, machine={})


def fake_measure(slowdowns, disturbed=None, latency_of=lambda net: net.true_ms):
    """A measure function for a machine ``slowdowns[session]`` times as slow as when the references were
    measured; ``disturbed`` names a network that one busy spell slows 3x more in every session."""
    calls = []

    def measure(nets, backend, threads, runs, warmup, rounds, seed):
        factor = slowdowns[len(calls)]
        calls.append({"nets": list(nets), "seed": seed, "runs": runs, "rounds": rounds})
        found = [
            _measurement(
                latency_of(n) * factor * (3.0 if disturbed and getattr(n, "name", None) == disturbed else 1.0)
            )
            for n in nets
        ]
        return found, [np.full(runs, m.latency_ms) for m in found]

    measure.calls = calls
    return measure


def test_a_uniform_slowdown_is_measured_and_removed():
    """Every network 1.3x slower than when the references were measured: raw 1.3x, drift 1.3, corrected
    the undrifted latency; each session's figures are recorded."""
    refs = [_net(0.5), _net(0.8), _net(1.2)]
    measure = fake_measure([1.3])
    found = measure_drift_corrected(_net(0.9), refs, [0.5, 0.8, 1.2], runs=40, rounds=4, measure=measure)
    assert found.measured.latency_ms == pytest.approx(0.9 * 1.3)
    assert found.drift_factor == pytest.approx(1.3) and found.corrected_ms == pytest.approx(0.9)
    assert found.reference_now_ms == pytest.approx([0.65, 1.04, 1.56])
    # the network and its references are measured together, in the same rounds
    assert len(measure.calls) == 1 and measure.calls[0]["nets"][1:] == refs
    assert (measure.calls[0]["runs"], measure.calls[0]["rounds"]) == (40, 4)
    record = found.to_dict()
    assert record["drift_factor"] == pytest.approx(1.3) and record["corrected_ms"] == pytest.approx(0.9)
    assert [r["ratio"] for r in record["references"]] == pytest.approx([1.3, 1.3, 1.3])
    (session,) = record["sessions"]
    assert session["drift_factor"] == pytest.approx(1.3) and session["corrected_ms"] == pytest.approx(0.9)
    assert record["round_drift"] == pytest.approx({"min": 1.3, "median": 1.3, "max": 1.3})


def test_a_fast_spell_only_the_network_caught_does_not_move_the_paired_estimate():
    """Every round at 1.3x, except that in round 3 the network alone ran at 1.0x (a spell that ended
    before its references ran). Its fastest run is then the spell's; dividing it by the references'
    fastest runs would report 0.9 / 1.3 ms. Paired by round, only round 3 is off, and the median over
    rounds is the undrifted latency."""
    runs, rounds = 40, 10

    def measure(nets, backend, threads, runs, warmup, rounds, seed):
        times = []
        for n in nets:
            speed = [1.0 if (n.name == "net" and r == 3) else 1.3 for r in range(rounds)]
            times.append(np.concatenate([np.full(len(c), n.true_ms * speed[r])
                                         for r, c in enumerate(np.array_split(np.arange(runs), rounds))]))  # fmt: skip
        return [_measurement(float(t.min())) for t in times], times

    refs = [_net(0.5), _net(0.8), _net(1.2)]
    found = measure_drift_corrected(_net(0.9, "net"), refs, [0.5, 0.8, 1.2], runs=runs, rounds=rounds,
                                    measure=measure)  # fmt: skip
    assert found.measured.latency_ms == pytest.approx(0.9)  # the raw figure is the spell's
    assert found.corrected_ms == pytest.approx(0.9)
    assert found.drift_factor == pytest.approx(
        1.0
    )  # at the raw figure's moment the machine was as fast as then
    assert found.to_dict()["round_drift"] == pytest.approx({"min": 1.3, "median": 1.3, "max": 1.3})


def test_sessions_keep_each_networks_fastest_and_the_median_ignores_a_disturbed_reference():
    """Three sessions at 1.6x, 1.3x, 1.45x: each network's fastest (the 1.3x session) is kept; a reference
    slowed 3x more by a busy spell does not move the median ratio."""
    refs = [_net(0.5), _net(0.8, "busy"), _net(1.2)]
    measure = fake_measure([1.6, 1.3, 1.45], disturbed="busy")
    found = measure_drift_corrected(_net(2.0), refs, [0.5, 0.8, 1.2], sessions=3, seed=7, measure=measure)
    assert [c["seed"] for c in measure.calls] == [7, 8, 9]  # each session its own round order
    assert found.measured.latency_ms == pytest.approx(2.6)
    assert found.drift_factor == pytest.approx(1.3) and found.corrected_ms == pytest.approx(2.0)
    per_session = found.to_dict()["sessions"]
    assert [s["drift_factor"] for s in per_session] == pytest.approx([1.6, 1.3, 1.45])
    assert [s["corrected_ms"] for s in per_session] == pytest.approx([2.0, 2.0, 2.0])


class FakeMachine:
    """A fake clock whose machine alternates between 1.3x and 2.0x as slow as when the references were
    measured, every 3 calls: interleaved rounds give every network some calls in the 1.3x spells."""

    def __init__(self):
        self.now_ns, self.calls = 0, 0

    def perf_counter_ns(self) -> int:
        return self.now_ns

    def network(self, ms: float):
        def call():
            factor = (1.3, 2.0)[(self.calls // 3) % 2]
            self.calls += 1
            self.now_ns += round(ms * factor * 1e6)

        return call


def test_the_correction_on_a_fake_clock_through_the_interleaved_rounds(monkeypatch):
    machine = FakeMachine()
    monkeypatch.setattr(measure_module, "time", SimpleNamespace(perf_counter_ns=machine.perf_counter_ns))

    def measure(nets, backend, threads, runs, warmup, rounds, seed):  # measure_many on fake calls
        times = time_interleaved([machine.network(n.true_ms) for n in nets], runs, warmup, rounds, seed=seed)
        return [
            Measurement.from_times(t, warmup=warmup, backend=backend, threads=threads, input={})
            for t in times
        ], times

    refs = [_net(0.4), _net(0.7), _net(1.1), _net(1.6)]
    found = measure_drift_corrected(_net(0.95), refs, [0.4, 0.7, 1.1, 1.6], runs=40, rounds=5, warmup=1,
                                    measure=measure)  # fmt: skip
    assert machine.calls > 5 * 40  # the fake clock was what timed them
    assert found.measured.latency_ms == pytest.approx(0.95 * 1.3)
    assert found.measured.p75_ms == pytest.approx(0.95 * 2.0)  # the 2.0x spells are in the runs too
    assert found.drift_factor == pytest.approx(1.3) and found.corrected_ms == pytest.approx(0.95)


def test_bad_references_are_clear_errors(tmp_path):
    with pytest.raises(MusicnasError, match="reference networks"):
        measure_drift_corrected(_net(1.0), [], [], measure=fake_measure([1.0]))
    with pytest.raises(MusicnasError, match="2 reference networks for 1"):
        measure_drift_corrected(_net(1.0), [_net(1.0), _net(2.0)], [1.0], measure=fake_measure([1.0]))
    with pytest.raises(MusicnasError, match="positive"):
        measure_drift_corrected(_net(1.0), [_net(1.0)], [0.0], measure=fake_measure([1.0]))
    with pytest.raises(MusicnasError, match="at least one reference"):
        drift_factor([], [])
    with pytest.raises(MusicnasError, match="sessions|session"):
        measure_drift_corrected(_net(1.0), [_net(1.0)], [1.0], sessions=0, measure=fake_measure([1.0]))
    # a table without fitting networks (built with --fit-archs 0), or with all of them left out
    bare = hand_table(fit_archs=0)
    with pytest.raises(MusicnasError, match="no fitting networks.*build-table"):
        reference_archs(bare)
    excluded = hand_table()
    for row in excluded.fit["archs"]:
        row["excluded"] = True
    with pytest.raises(MusicnasError, match="no fitting networks"):
        reference_archs(excluded)


def test_a_latency_search_refuses_a_table_without_references_at_the_start(tmp_path):
    """Before the search, not after it: the derived network is measured against those references."""
    path = tmp_path / "t.json"
    save_model(hand_table(num_classes=3, fit_archs=0), path)
    config = SimpleNamespace(latency_backend="onnxruntime", latency_threads=1, latency_table=str(path))
    with pytest.raises(MusicnasError, match="no fitting networks"):
        model_for_search(config, SPACE, INPUT, 3)
    save_model(hand_table(num_classes=3), path)
    assert len(model_for_search(config, SPACE, INPUT, 3).fit["archs"]) == 4


def test_the_tables_references_are_its_kept_fitting_networks_nearest_the_prediction():
    model = hand_table(fit_archs=6)
    rows = model.fit["archs"]
    rows[0]["excluded"] = True
    known = [r["measured_ms"] for r in rows]
    near = known[3]
    archs, ms = reference_archs(model, near, n=3)
    kept = sorted(range(1, 6), key=lambda i: abs(known[i] - near))[:3]
    assert ms == [known[i] for i in kept]
    assert [a.to_flat() for a in archs] == [rows[i]["flat"] for i in kept]
    # what measure_against_table measures: the network, then those references, the table's protocol
    target = SPACE.sample(3)
    net = deployed_from_arch(target, 3)
    # a machine 1.3x as slow as when the table was built, where the table predicts every network exactly
    measure = fake_measure([1.3], latency_of=lambda n: model.predict(n.arch))
    found = measure_against_table(model, net, n_references=3, runs=30, rounds=3, measure=measure)
    nets = measure.calls[0]["nets"]
    expected = [
        rows[i]["flat"] for i in sorted(range(1, 6), key=lambda i: abs(known[i] - model.predict(target)))[:3]
    ]
    assert nets[0] is net and [n.arch.to_flat() for n in nets[1:]] == expected
    assert (measure.calls[0]["runs"], measure.calls[0]["rounds"]) == (30, 3)
    assert found.drift_factor == pytest.approx(1.3) and found.corrected_ms == pytest.approx(
        model.predict(target)
    )


def test_a_network_with_another_input_than_the_table_is_refused():
    from musicnas.data.features import FeatureConfig

    other = FeatureConfig(n_mels=32)
    net = deployed_from_arch(SPACE.sample(0), 3, other)
    with pytest.raises(MusicnasError, match="input"):
        measure_against_table(hand_table(), net, measure=fake_measure([1.0]))


def test_latency_cli_drift_correct(tmp_path, capsys):
    """A real measurement of a tiny network against the table's references (timings not asserted, only
    how the figures relate), and the CLI's errors."""
    table = tmp_path / "t.json"
    model = hand_table(num_classes=3)
    save_model(model, table)
    arch_path = tmp_path / "arch.json"
    arch_path.write_text(json.dumps(SPACE.sample(0).to_json()))
    code, out, err = run_cli(["latency", str(arch_path), "--classes", "3", "--drift-correct", "--table", str(table),
                              "--json"], capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    drift = result["drift"]
    assert drift["measured_ms"] == result["latency_ms"] and result["runs"] == 200 and result["rounds"] == 10
    assert drift["corrected_ms"] == pytest.approx(result["latency_ms"] / drift["drift_factor"])
    assert {r["known_ms"] for r in drift["references"]} == {r["measured_ms"] for r in model.fit["archs"]}
    code, _, err = run_cli(["latency", str(arch_path), "--classes", "3", "--drift-correct", "--table", str(table),
                            "--with-frontend"], capsys)  # fmt: skip
    assert code == 2 and "front end" in err
    code, _, err = run_cli(["latency", str(arch_path), "--table", str(table)], capsys)
    assert code == 2 and "--drift-correct" in err
    save_model(hand_table(num_classes=3, fit_archs=0), table)
    code, _, err = run_cli(["latency", str(arch_path), "--classes", "3", "--drift-correct", "--table", str(table)],
                           capsys)  # fmt: skip
    assert code == 2 and "no fitting networks" in err
