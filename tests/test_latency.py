"""The latency package: parts match the network, the table's prediction, the latency reward, the CLI's
JSON, a latency-targeted search's arch.json, the model card. Timings are never asserted: a table with
hand-set entries stands in for a measured one wherever the numbers matter."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from musicnas.latency.measure import ROUND_WARMUP, summarise, time_interleaved
from musicnas.latency.parts import arch_part_keys, arch_parts, space_parts
from musicnas.latency.table import (
    LatencyModel,
    fit_robust,
    fit_scales,
    load_model,
    part_kind,
    repeatability,
    save_model,
)
from musicnas.runtime import MusicnasError
from musicnas.spaces.cost import Cost
from musicnas.spaces.macro.arch import MacroArch, MacroSpace
from musicnas.spaces.macro.fixed_net import FixedMacroNet
from test_search_cli import TINY as TINY_SEARCH
from test_search_cli import run_cli

torch.set_num_threads(1)

SPACE = MacroSpace(num_layers=2, channels=4, num_branches=4, stem_stride=2)  # the search CLI's tiny space
INPUT = (1, 64, 94)  # default feature options (the tiny cache's)


def hand_table(
    num_classes: int = 3, scale: float = 1.25, overhead: float = 0.5, fit_archs: int = 4
) -> LatencyModel:
    """Every part of SPACE with a distinct, hand-set latency (no measurement), and ``fit_archs`` fitting
    rows (the references of a drift-corrected measurement) whose "measured" latency is the prediction."""
    entries = {p.key: 0.01 * (i + 1) for i, p in enumerate(space_parts(SPACE, INPUT, num_classes))}
    model = LatencyModel(
        SPACE, INPUT, num_classes, "onnxruntime", 1, entries, {"all": scale}, overhead, 0.001
    )
    archs = [SPACE.sample(100 + i) for i in range(fit_archs)]
    model.fit = {
        "archs": [{"flat": a.to_flat(), "measured_ms": model.predict(a)} for a in archs],
        "warmup": 2,
    }
    return model


def test_parts_of_an_architecture_by_hand():
    """2 layers, pool after layer 0: layer 1 reads the stem as a skip, so both tensors are reduced."""
    arch = MacroArch(SPACE, ops=(0, 3), skips=((), (1,)))
    assert arch_part_keys(arch, INPUT, 3) == [
        "stem/c1-4/k3/s2/64x94",
        "op/conv_3x3/c4/32x47",
        "reduce/c4-8/32x47",
        "reduce/c4-8/32x47",
        "op/sep_conv_5x5/c8/16x24",
        "skip_mix/n2/c8/16x24",
        "head/c8/16x24/k3",
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parts_are_the_fixed_network_pieces(seed):
    """Each part's module sees the input shape its counterpart in FixedMacroNet sees, in running order,
    and produces the same output shape."""
    space = MacroSpace(num_layers=6, channels=4, num_branches=6, stem_stride=2)
    arch = space.sample(seed)
    net = FixedMacroNet(arch, num_classes=5).eval()
    seen = []
    pieces = [net.stem, *[m for layer in net.layers for m in (layer.op, layer.skip_mix) if m is not None],
              *net.reductions.values(), net.head]  # fmt: skip
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, tuple(i[0].shape), tuple(o.shape))))
             for m in pieces]  # fmt: skip
    with torch.no_grad():
        net(torch.zeros(1, *INPUT))
    for h in hooks:
        h.remove()
    parts = arch_parts(arch, INPUT, 5)
    assert len(parts) == len(seen)
    for part, (_module, in_shape, out_shape) in zip(parts, seen, strict=True):
        module, inputs = part.build()
        # a skip mix's part takes the tensors before concatenation
        assert (1, sum(x.shape[1] for x in inputs), *inputs[0].shape[2:]) == in_shape, part.key
        with torch.no_grad():
            assert tuple(module.eval()(*inputs).shape) == out_shape, part.key
    keys = {p.key for p in space_parts(space, INPUT, 5)}
    assert {p.key for p in parts} <= keys


def test_prediction_is_scale_times_the_sum_of_entries_plus_overhead():
    model = hand_table(scale=1.25, overhead=0.5)
    arch = MacroArch(SPACE, ops=(0, 3), skips=((), (1,)))
    e = model.entries
    by_hand = (
        e["stem/c1-4/k3/s2/64x94"] + e["op/conv_3x3/c4/32x47"] + 2 * e["reduce/c4-8/32x47"]
        + e["op/sep_conv_5x5/c8/16x24"] + e["skip_mix/n2/c8/16x24"] + e["head/c8/16x24/k3"]
    )  # fmt: skip
    assert model.predict(arch) == pytest.approx(1.25 * by_hand + 0.5)
    other = MacroArch(SPACE, ops=(0, 3), skips=((), (0,)))  # no skip: one reduction, a 1-input mix
    assert model.predict(other) == pytest.approx(
        1.25 * (by_hand - e["reduce/c4-8/32x47"] - e["skip_mix/n2/c8/16x24"] + e["skip_mix/n1/c8/16x24"])
        + 0.5
    )
    del model.entries["head/c8/16x24/k3"]
    with pytest.raises(MusicnasError, match="lacks 1 parts"):
        model.predict(arch)
    with pytest.raises(MusicnasError, match="not supported|does not cover"):
        space_parts(MacroSpace(num_layers=2, channels=4, whole_channels=False), INPUT, 3)


def test_fit_recovers_a_line_and_leaves_out_a_disturbed_measurement():
    sums = [1.0, 1.5, 2.0, 2.5, 3.0]
    scales, overhead = fit_scales([[v] for v in sums], [1.2 * v - 0.3 for v in sums])
    assert scales == pytest.approx([1.2]) and overhead == pytest.approx(-0.3)  # the overhead may be negative
    rows = [{"sums_ms": {"all": v}, "measured_ms": 1.2 * v + 0.3} for v in sums]
    rows[2]["measured_ms"] *= 2.0  # another process slowed this run down
    scales, overhead = fit_robust(rows, ["all"])
    assert scales == pytest.approx({"all": 1.2}) and overhead == pytest.approx(0.3)
    assert [r["excluded"] for r in rows] == [False, False, True, False, False]
    scales, overhead = fit_scales([[2.0]], [2.5])  # one point: overhead only
    assert scales == pytest.approx([1.0]) and overhead == pytest.approx(0.5)


def test_per_kind_fit_recovers_known_scales_of_synthetic_part_costs():
    """Whole-network latencies made from the table's own entries with a known scale per kind of part
    (and a negative overhead): the per-kind fit on 30 architectures finds those scales and predicts 30
    others exactly. Stem and head, which every architecture has once, cannot be told from the overhead:
    they keep scale 1 and the overhead takes their difference."""
    space = MacroSpace(num_layers=4, channels=4, num_branches=6, stem_stride=2)
    entries = {p.key: 0.02 + 0.01 * (i % 7) for i, p in enumerate(space_parts(space, INPUT, 3))}
    model = LatencyModel(space, INPUT, 3, "onnxruntime", 1, entries, groups="per-kind")
    true = {"op/conv_3x3": 1.3, "op/conv_5x5": 1.1, "op/sep_conv_3x3": 0.8, "op/sep_conv_5x5": 0.9,
            "op/avg_pool_3x3": 2.0, "op/max_pool_3x3": 1.7, "skip_mix": 1.4, "reduce": 2.5,
            "stem": 3.0, "head": 0.5}  # fmt: skip

    def measured(arch):
        return sum(true[g] * v for g, v in model.group_sums_ms(arch).items()) - 0.2

    archs = [space.sample(seed) for seed in range(60)]
    rows = [{"sums_ms": model.group_sums_ms(a), "measured_ms": measured(a)} for a in archs[:30]]
    groups = sorted({g for r in rows for g in r["sums_ms"]})
    assert set(groups) == set(true)
    model.scales, model.overhead_ms = fit_robust(rows, groups)
    for group, scale in true.items():
        expected = 1.0 if group in ("stem", "head") else scale
        assert model.scales[group] == pytest.approx(expected, rel=1e-6), group
    for arch in archs[30:]:
        assert model.predict(arch) == pytest.approx(measured(arch), rel=1e-9)
    assert not any(r["excluded"] for r in rows)
    # one scale for all parts cannot fit these rows exactly: the grouping changes the model
    one = LatencyModel(space, INPUT, 3, "onnxruntime", 1, entries)
    one_rows = [{"sums_ms": one.group_sums_ms(a), "measured_ms": measured(a)} for a in archs[:30]]
    one.scales, one.overhead_ms = fit_robust(one_rows, ["all"], tolerance=1.0)
    assert max(abs(one.predict(a) / measured(a) - 1) for a in archs[30:]) > 0.01


def test_a_scale_the_fit_would_zero_stays_one():
    """A group whose sum does not explain the latency would get scale 0 from NNLS (its op free for a
    latency-aware search): it is kept at 1 and the others refitted with it."""
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    b = np.array([0.5, 0.1, 0.4, 0.2, 0.3])
    y = 2.0 * a - 3.0 * b + 1.0  # more of b makes it faster: no non-negative scale does that
    scales, overhead = fit_scales(np.stack([a, b], axis=1), y)
    assert scales[1] == 1.0 and scales[0] > 0
    assert overhead == pytest.approx(float(np.mean(y - a * scales[0] - b)))


def test_part_kinds():
    assert part_kind("op/sep_conv_3x3/c48/16x24") == "op/sep_conv_3x3"
    assert [part_kind(k) for k in ("stem/c1-24/k3/s2/64x94", "skip_mix/n3/c48/16x24", "reduce/c24-48/32x47",
                                   "head/c96/8x12/k10")] == ["stem", "skip_mix", "reduce", "head"]  # fmt: skip
    with pytest.raises(MusicnasError, match="unknown fit grouping"):
        LatencyModel(SPACE, INPUT, 3, "onnxruntime", 1, hand_table().entries, groups="per-op").predict(
            SPACE.sample(0)
        )


def test_interleaved_rounds_spread_each_function_over_the_measurement():
    calls: list[str] = []
    fns = [lambda name=name: calls.append(name) for name in "abc"]
    times = time_interleaved(fns, runs=12, warmup=5, rounds=4, seed=3)
    assert [len(t) for t in times] == [12, 12, 12]
    # each function: 5 warm-up calls in the first round, ROUND_WARMUP in each later one, 12 timed
    assert all(calls.count(n) == 5 + 3 * ROUND_WARMUP + 12 for n in "abc")
    # rounds: every function's calls are spread over the whole sequence, not one block after another
    # (a round may end with the function the next one starts with, so 4 rounds give 3-4 blocks each)
    blocks = [n for i, n in enumerate(calls) if i == 0 or calls[i - 1] != n]
    assert all(3 <= blocks.count(n) <= 4 for n in "abc")
    quarter = len(calls) // 4
    assert all(n in calls[:quarter] and n in calls[-quarter:] for n in "abc")
    assert [len(t) for t in time_interleaved(fns, runs=3, warmup=0, rounds=10)] == [
        3,
        3,
        3,
    ]  # <= 1 run a round
    with pytest.raises(MusicnasError, match="rounds >= 1"):
        time_interleaved(fns, runs=3, rounds=0)


def test_latency_is_the_fastest_run_and_repeatability_compares_halves():
    times = np.array([2.0, 9.0, 2.2, 2.1, 5.0, 2.4])
    stats = summarise(times)
    assert stats["latency_ms"] == 2.0 == stats["min_ms"] and stats["median_ms"] == pytest.approx(2.3)
    assert repeatability(times) == pytest.approx(2.0 / 2.1 - 1.0)  # first three runs vs last three


def test_table_file_round_trip_and_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICNAS_CACHE_DIR", str(tmp_path / "cache"))
    model = hand_table()
    path = save_model(model)
    assert path.parent == tmp_path / "cache" / "latency" and path.name.endswith("-onnxruntime-t1.json")
    data = json.loads(path.read_text())
    assert data["format"] == "musicnas-latency-table" and data["version"] == 2 and "cpu" in data["machine"]
    loaded = load_model(SPACE, INPUT, 3)
    arch = SPACE.sample(3)
    assert loaded.predict(arch) == pytest.approx(model.predict(arch))
    with pytest.raises(MusicnasError, match="has no table for space"):
        load_model(SPACE, INPUT, 4)
    with pytest.raises(MusicnasError, match="no latency table at .*build-table"):
        load_model(SPACE, INPUT, 3, threads=2)
    data["version"] = 1  # a table of the previous protocol
    path.write_text(json.dumps(data))
    with pytest.raises(
        MusicnasError,
        match="version 1; this musicnas reads version 2.*rebuild it with `musicnas latency build-table`",
    ):
        load_model(SPACE, INPUT, 3)
    with pytest.raises(MusicnasError, match="version 1"):
        save_model(model, path)  # adding a table to an old file does not mix protocols either


def test_tunas_reward_on_latency_by_hand_pulls_toward_the_target():
    from musicnas.search.rewards import make_reward

    tunas = make_reward("tunas", "latency", 2.0)
    # R = Q + beta * |T / T0 - 1| with beta = -0.1
    assert tunas(0.8, None, Cost(1, 1, latency_ms=3.0)) == pytest.approx(0.8 - 0.1 * 0.5)
    assert tunas(0.8, None, Cost(1, 1, latency_ms=1.0)) == pytest.approx(0.8 - 0.1 * 0.5)
    assert tunas(0.8, None, Cost(1, 1, latency_ms=2.0)) == pytest.approx(0.8)
    rewards = [tunas(0.8, None, Cost(1, 1, latency_ms=t)) for t in (1.0, 1.5, 2.0, 2.5, 3.0)]
    assert int(np.argmax(rewards)) == 2  # equal accuracy: the architecture at the target wins
    hard = make_reward("mnas-hard", "latency", 2.0)
    assert hard(0.8, None, Cost(1, 1, latency_ms=4.0)) == pytest.approx(0.8 * 2.0**-1)
    assert hard(0.8, None, Cost(1, 1, latency_ms=1.0)) == pytest.approx(0.8)
    with pytest.raises(MusicnasError, match="target-latency-ms"):
        tunas(0.8, None, Cost(1, 1))


def test_search_reward_uses_the_table(tiny_cache, tmp_path):
    """SearchRun's reward for an architecture is the TuNAS reward of the table's prediction."""
    from musicnas import runtime
    from musicnas.search.config import resolve_config
    from musicnas.search.enas import SearchRun

    table = tmp_path / "table.json"
    model = hand_table(tiny_cache.num_classes)
    save_model(model, table)
    config = resolve_config("cpu", "macro", None, {**TINY_SEARCH, "reward": "tunas", "cost_metric": "latency",
                                                   "cost_target": 1.0, "latency_table": str(table)})  # fmt: skip
    run = SearchRun(config, tiny_cache, tmp_path / "run", runtime.setup("cpu", 1))
    arch = SPACE.sample(5)
    predicted = model.predict(arch)
    assert run.cost(arch).latency_ms == pytest.approx(predicted)
    assert run.reward(0.5, arch) == pytest.approx(0.5 - 0.1 * abs(predicted / 1.0 - 1.0))


def test_latency_cli_json_has_the_documented_keys(tmp_path, capsys):
    arch_path = tmp_path / "arch.json"
    arch_path.write_text(json.dumps(SPACE.sample(0).to_json()))
    for backend, extra in (("onnxruntime", []), ("torch", ["--with-frontend"])):
        code, out, err = run_cli(["latency", str(arch_path), "--backend", backend, "--threads", "1",
                                  "--runs", "50", "--warmup", "2", "--json", *extra], capsys)  # fmt: skip
        assert code == 0, err
        result = json.loads(out)
        assert {"latency_ms", "median_ms", "iqr_ms", "backend", "threads", "input", "machine"} <= set(result)
        assert result["latency_ms"] == result["min_ms"] <= result["median_ms"] and result["rounds"] == 5
        assert result["backend"] == backend and result["threads"] == 1 and result["runs"] == 50
        assert result["median_ms"] > 0 and result["p25_ms"] <= result["median_ms"] <= result["p75_ms"]
        assert result["iqr_ms"] == pytest.approx(result["p75_ms"] - result["p25_ms"])
        assert {"cpu", "cores"} <= set(result["machine"]) and result["machine"]["cores"] >= 1
        if extra:
            assert result["input"] == {"name": "waveform", "shape": [1, 48000]}
        else:
            assert result["input"] == {"name": "features", "shape": [1, *INPUT]}
    code, _, err = run_cli(["latency", str(arch_path), "--runs", "10"], capsys)
    assert code != 0 and "10" in err
    code, _, err = run_cli(["latency", str(tmp_path / "arch.json"), "--save"], capsys)
    assert code == 2 and "MODEL_DIR" in err


def test_build_table_and_check_cli_on_a_tiny_space(tmp_path, capsys):
    table = tmp_path / "t.json"
    space_args = [
        "--layers",
        "2",
        "--channels",
        "4",
        "--branches",
        "4",
        "--classes",
        "3",
        "--table",
        str(table),
    ]
    code, out, err = run_cli(["latency", "build-table", *space_args, "--runs", "5", "--rounds", "2",
                              "--fit-archs", "3", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    model = load_model(SPACE, INPUT, 3, path=table)
    assert set(model.entries) == {p.key for p in space_parts(SPACE, INPUT, 3)} and summary["entries"] == 13
    assert len(model.fit["archs"]) == 3 and model.scales["all"] > 0 and model.fit["rounds"] == 2
    code, out, err = run_cli(
        ["latency", "check", *space_args, "--runs", "6", "--rounds", "2", "--archs", "3", "--json"], capsys
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["archs"] == 3 and len(result["rows"]) == 3
    for row in result["rows"]:
        arch = MacroArch.from_flat(row["flat"], SPACE)
        assert row["predicted_ms"] == pytest.approx(model.predict(arch))
        assert row["error"] == pytest.approx(row["predicted_ms"] / row["measured_ms"] - 1.0)
    within = np.mean([abs(r["error"]) <= 0.1 for r in result["rows"]])
    assert result["within_10pct"] == pytest.approx(within)
    assert result["rounds"] == 2 and all(r["measured_ms"] <= r["median_ms"] for r in result["rows"])
    halves = np.mean([abs(r["halves_diff"]) <= 0.1 for r in result["rows"]])
    assert result["halves_within_10pct"] == pytest.approx(halves)
    code, _, err = run_cli(["latency", "check", "--space", "micro", "--table", str(table)], capsys)
    assert code == 2 and "micro" in err


def test_search_with_target_latency_records_predicted_and_measured(tiny_cache, tmp_path, capsys):
    table = tmp_path / "table.json"
    model = hand_table(tiny_cache.num_classes)
    save_model(model, table)
    config = tmp_path / "search.json"
    config.write_text(json.dumps(TINY_SEARCH))
    run = tmp_path / "run"
    code, out, err = run_cli(
        ["search", "--data", str(tiny_cache.root), "--config", str(config), "--epochs", "1", "--out", str(run),
         "--target-latency-ms", "0.9", "--latency-table", str(table), "--device", "cpu", "--threads", "1"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "latency: predicted" in out
    recorded = json.loads((run / "config.json").read_text())["search"]
    assert (recorded["reward"], recorded["cost_metric"], recorded["cost_target"]) == ("tunas", "latency", 0.9)
    arch_json = json.loads((run / "arch.json").read_text())
    arch = MacroArch.from_json(arch_json)  # the extra key does not disturb reading the architecture
    lat = arch_json["latency"]
    assert lat["target_ms"] == 0.9 and lat["predicted_ms"] == pytest.approx(model.predict(arch))
    assert lat["measured"]["backend"] == "onnxruntime" and lat["measured"]["threads"] == 1
    assert lat["measured_ms"] == lat["measured"]["latency_ms"] > 0 and lat["measured"]["runs"] >= 50
    assert lat["measured_error"] == pytest.approx(lat["measured_ms"] / 0.9 - 1.0)
    # measured interleaved with the table's fitting networks, corrected by their median slowdown
    refs = lat["drift"]["references"]
    known = {r["measured_ms"] for r in model.fit["archs"]}
    assert 1 <= len(refs) <= 4 and {r["known_ms"] for r in refs} <= known
    assert lat["corrected_ms"] == pytest.approx(lat["measured_ms"] / lat["drift_factor"])
    assert lat["corrected_error"] == pytest.approx(lat["corrected_ms"] / 0.9 - 1.0)
    sessions = lat["drift"]["sessions"]
    assert len(sessions) == 3 and lat["measured_ms"] == min(s["measured_ms"] for s in sessions)
    assert all(len(s["load_average"]) == 3 for s in sessions)  # what each session ran beside
    candidates = json.loads((run / "candidates.json").read_text())
    best = candidates["candidates"][0]
    assert best["cost"]["latency_ms"] == pytest.approx(lat["predicted_ms"])
    for entry in candidates["derive"]["scored"]:
        scored = MacroArch.from_flat(entry["flat"], SPACE)
        assert entry["latency_ms"] == pytest.approx(model.predict(scored))
    # the report plots them with the target
    from musicnas.report import render_report

    page = render_report(run)
    assert "Accuracy vs latency" in page and "target (ms)" in page and "drift-corrected (ms)" in page
    code, _, err = run_cli(["search", "--data", str(tiny_cache.root), "--target-latency-ms", "1",
                            "--cost-metric", "macs", "--out", str(tmp_path / "r2")], capsys)  # fmt: skip
    assert code == 2 and "--target-latency-ms" in err


def test_latency_aware_search_with_dropout_resumes_bit_identically(tiny_cache, tmp_path):
    """Killed in epoch 2 and resumed, a latency-targeted search with child dropout repeats the
    uninterrupted one: predictions come from the table (and the checkpointed cost cache), not from
    measurements, and measuring the result happens after the search."""
    from musicnas import runtime
    from musicnas.search.config import resolve_config
    from musicnas.search.enas import run_search
    from test_search_loop import Kill, kill_at, run_outputs

    table = tmp_path / "table.json"
    save_model(hand_table(tiny_cache.num_classes), table)
    values = {**TINY_SEARCH, "epochs": 2, "reward": "tunas", "cost_metric": "latency", "cost_target": 1.0,
              "latency_table": str(table), "child_dropout": 0.5}  # fmt: skip
    config = resolve_config("cpu", "macro", None, values)
    rt = runtime.setup("cpu", 1)
    run_search(config, tiny_cache, tmp_path / "ref", rt)
    with pytest.raises(Kill):
        run_search(config, tiny_cache, tmp_path / "resumed", rt, callback=kill_at("child", 1, 0))
    run_search(config, tiny_cache, tmp_path / "resumed", rt, resume=True)
    ref, resumed = run_outputs(tmp_path / "ref"), run_outputs(tmp_path / "resumed")
    ref_latency, resumed_latency = ref["arch"].pop("latency"), resumed["arch"].pop("latency")
    assert resumed == ref
    assert resumed_latency["predicted_ms"] == ref_latency["predicted_ms"]


# ------------------------------------------------------------------------------------------------ card
def parse_front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    yaml_text = text[4 : text.index("\n---\n", 4)]
    try:
        import yaml
    except ModuleNotFoundError:
        return strict_minimal_yaml(yaml_text)
    return yaml.safe_load(yaml_text)


def strict_minimal_yaml(text: str) -> dict:
    """Reads exactly the subset the card writer emits (block mappings and sequences of mappings, every
    scalar or flow list in JSON syntax) and fails on anything else."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    pos = 0

    def block(indent: int):
        nonlocal pos
        out: dict = {}
        while pos < len(lines):
            line = lines[pos]
            depth = len(line) - len(line.lstrip(" "))
            if depth < indent:
                break
            assert depth == indent, f"bad indentation: {line!r}"
            m = re.fullmatch(r'((?:[A-Za-z_][A-Za-z0-9_.-]*)|"(?:[^"\\]|\\.)*"): ?(.*)', line.strip())
            assert m, f"not a mapping entry: {line!r}"
            key = json.loads(m.group(1)) if m.group(1).startswith('"') else m.group(1)
            pos += 1
            if m.group(2):
                out[key] = json.loads(m.group(2))
            elif pos < len(lines) and lines[pos].lstrip().startswith("- "):
                items = []
                while pos < len(lines) and lines[pos].startswith(" " * (indent + 2) + "- "):
                    lines[pos] = lines[pos].replace("- ", "  ", 1)
                    items.append(block(indent + 4))
                out[key] = items
            else:
                out[key] = block(indent + 2)
        return out

    result = block(0)
    assert pos == len(lines), f"unparsed: {lines[pos]!r}"
    return result


def test_yaml_writer_output_is_read_alike_by_the_strict_reader():
    from musicnas.export.card import to_yaml

    data = {"a": 1, "b": "x: y", "c": [1, "two", None], "d": {"e": 1.5, "f": {"g": True}}, "h": [{"i": 1, "j": [2]}, {"k": "l"}],
            "odd key": "v", "empty": {}, "nan": float("nan")}  # fmt: skip
    expected = {**data, "nan": None}
    assert strict_minimal_yaml(to_yaml(data)) == expected
    try:
        import yaml
    except ModuleNotFoundError:
        return
    assert yaml.safe_load(to_yaml(data)) == expected


def test_model_card_front_matter_holds_the_listed_fields(tmp_path):
    from musicnas.data.features import FeatureConfig
    from musicnas.export.bundle import save_bundle
    from musicnas.export.card import CARD_FILE, record_latency, record_search_provenance

    arch = SPACE.sample(1)
    net = FixedMacroNet(arch, num_classes=3)
    summary = {"seed": 7, "epochs": 2, "epochs_run": 2, "best_epoch": 1, "cost": {"params": 1234, "macs": 56789},
               "val": {"clips": 10, "clip_accuracy": 0.5, "track_accuracy": 0.6, "macro_f1": 0.4},
               "test": {"clips": 12, "clip_accuracy": 0.75, "track_accuracy": 0.8, "macro_f1": 0.7}}  # fmt: skip
    out = tmp_path / "model"
    save_bundle(
        out, net, arch, FeatureConfig(), ["rock: hard", "jazz", "pop"], np.zeros(64), np.ones(64), summary
    )
    meta = parse_front_matter((out / CARD_FILE).read_text())
    assert meta["library_name"] == "musicnas" and meta["pipeline_tag"] == "audio-classification"
    assert meta["classes"] == ["rock: hard", "jazz", "pop"]
    assert meta["params"] == 1234 and meta["macs"] == 56789 and meta["latency"] == []
    test_acc = [m for m in meta["metrics"] if m["split"] == "test" and m["name"] == "clip_accuracy"]
    assert test_acc == [{"name": "clip_accuracy", "split": "test", "value": 0.75, "seeds": [7], "clips": 12}]
    assert {(m["split"], m["name"]) for m in meta["metrics"]} == {
        (s, n) for s in ("val", "test") for n in ("clip_accuracy", "track_accuracy", "macro_f1")
    }

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": "musicnas-search-config", "search": {
        "seed": 3, "reward": "tunas", "cost_metric": "latency", "cost_target": 2.0, "space_options": {"num_layers": 2}}}))  # fmt: skip
    (run / "arch.json").write_text(
        json.dumps({**arch.to_json(), "latency": {"predicted_ms": 1.9, "measured_ms": 2.1}})
    )
    assert record_search_provenance(out, run / "arch.json")
    measurement = {"latency_ms": 1.2, "median_ms": 1.5, "iqr_ms": 0.1, "runs": 100, "batch": 1, "backend": "onnxruntime", "threads": 1,
                   "with_frontend": False, "machine": {"cpu": "Test CPU", "cores": 2}}  # fmt: skip
    record_latency(out, measurement)
    record_latency(out, {**measurement, "median_ms": 1.4})  # same setting: replaces, does not add
    record_latency(out, {**measurement, "with_frontend": True, "median_ms": 3.0, "latency_ms": None})
    card = (out / CARD_FILE).read_text()
    meta = parse_front_matter(card)
    assert [(r["median_ms"], r["with_frontend"]) for r in meta["latency"]] == [(1.4, False), (3.0, True)]
    assert [r["latency_ms"] for r in meta["latency"]] == [1.2, None]
    assert (
        "| 1.200 | 1.400 | 0.100 | onnxruntime |" in card and "| - | 3.000 |" in card
    )  # an old record: no latency_ms
    assert meta["latency"][0]["backend"] == "onnxruntime" and meta["latency"][0]["threads"] == 1
    assert meta["latency"][0]["cpu"] == "Test CPU" and meta["latency"][0]["cores"] == 2
    assert meta["search"]["seed"] == 3 and meta["search"]["config"]["cost_target"] == 2.0
    assert meta["search"]["config"]["space_options"] == {"num_layers": 2}
    assert meta["search"]["arch_latency"] == {"predicted_ms": 1.9, "measured_ms": 2.1}


def test_the_head_part_is_the_networks_head_with_bands_and_statistics_pooling():
    space = MacroSpace(
        num_layers=2, channels=4, num_branches=4, stem_stride=2, head_bands=2, head_pool="avg_std"
    )
    arch = space.sample(0)
    head = arch_parts(arch, INPUT, 5)[-1]
    assert head.key.endswith("/k5/b2/avg_std")
    module, (x,) = head.build()
    net_head = FixedMacroNet(arch, num_classes=5).head
    assert [p.shape for p in module.parameters()] == [p.shape for p in net_head.parameters()]
    net_head.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert torch.equal(module.eval()(x), net_head.eval()(x))  # the same computation
