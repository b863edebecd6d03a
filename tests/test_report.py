"""The HTML report: sections from fake search runs and model bundles written per the on-disk contract
(docs/architecture.md), embedded images that decode as PNGs, escaping, missing and malformed inputs,
and (when Chromium is installed) the page opening in a headless browser without errors."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib import image as mpl_image

from musicnas.report import render_report, write_report
from musicnas.report.archinfo import cell_outputs, describe_arch
from musicnas.report.figures import PNG_SIGNATURE
from musicnas.runtime import MusicnasError

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
EVIL = '<script>alert("x")</script>'
IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


# ---------------------------------------------------------------- fake inputs, per the contract


def macro_arch(num_layers: int, rng: np.random.Generator, branches: int = 6) -> dict:
    """Reference whole-channels flat form: per layer [op, one skip bit per earlier tensor but the input]."""
    flat = []
    for layer in range(num_layers):
        flat.append(int(rng.integers(branches)))
        flat.extend(int(b) for b in rng.random(layer) < 0.4)
    space = {
        "type": "macro",
        "num_layers": num_layers,
        "num_branches": branches,
        "whole_channels": True,
        "channels": 16,
    }
    return {"format": "musicnas-arch", "version": 1, "space": space, "flat": flat}


def micro_arch(num_nodes: int, rng: np.random.Generator) -> dict:
    flat = []
    for _cell in range(2):
        for j in range(num_nodes):
            flat += [
                int(rng.integers(j + 2)),
                int(rng.integers(5)),
                int(rng.integers(j + 2)),
                int(rng.integers(5)),
            ]
    space = {"type": "micro", "num_nodes": num_nodes, "num_cells": 2, "channels": 16}
    return {"format": "musicnas-arch", "version": 1, "space": space, "flat": flat}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_run_dir(root: Path, space: str = "macro", epochs: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arch = macro_arch(6, rng) if space == "macro" else micro_arch(5, rng)
    (root / "config.json").write_text(
        json.dumps({"seed": seed, "space": arch["space"], "skip_target": 0.4, "extra": [1]})
    )
    steps, epoch_rows, probs = [], [], []
    baseline = 0.0
    for epoch in range(epochs):
        for step in range(5):
            steps.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "phase": "child",
                    "loss": 2.0 - 0.1 * epoch,
                    "acc": 0.3 + 0.05 * epoch,
                    "lr": 0.05,
                    "time": 0.1,
                    "unknown_new_key": "ignored",
                }
            )
        for step in range(3):
            reward = float(0.3 + 0.1 * epoch + 0.05 * rng.random())
            baseline = 0.9 * baseline + 0.1 * reward
            row = {
                "epoch": epoch,
                "step": step,
                "phase": "controller",
                "reward": reward,
                "baseline": baseline,
                "entropy": 5.0 - 0.3 * epoch,
                "time": 0.2,
            }
            if space == "macro":
                row["skip_rate"] = 0.3 + 0.01 * step
            steps.append(row)
        epoch_rows.append(
            {
                "epoch": epoch,
                "child_loss": 2.0 - 0.1 * epoch,
                "child_acc": 0.3 + 0.05 * epoch,
                "val_acc": 0.28 + 0.05 * epoch,
                "reward": 0.3 + 0.1 * epoch,
                "baseline": baseline,
                "entropy": 5.0 - 0.3 * epoch,
                "lr": 0.05 / (epoch + 1),
                "controller_lr": 1e-3,
                "time": 1.0,
                "elapsed": float(epoch + 1),
            }
        )
        probs.append(
            {
                "epoch": epoch,
                "decisions": [
                    {"name": f"layer{i}_op", "probs": list(rng.dirichlet(np.ones(6)))} for i in range(6)
                ]
                + [
                    {"name": "layer2.skips", "probs": [[0.6, 0.4], [0.3, 0.7]]}
                ],  # as MacroController writes them
            }
        )
    write_jsonl(root / "metrics_steps.jsonl", steps)
    write_jsonl(root / "metrics_epochs.jsonl", epoch_rows)
    write_jsonl(root / "controller_probs.jsonl", probs)
    (root / "arch.json").write_text(json.dumps(arch))
    cands = []
    for i in range(3):
        cand_arch = arch if i == 0 else (macro_arch(6, rng) if space == "macro" else micro_arch(5, rng))
        cands.append(
            {
                "arch": cand_arch,
                "score": 0.6 - 0.1 * i,
                "source": "derived" if i else "seen",
                "cost": {"params": 12345 * (i + 1), "macs": 6_000_000 * (i + 1)},
            }
        )
    (root / "candidates.json").write_text(json.dumps({"candidates": cands, "num_sampled": 100}))
    return root


def make_bundle_dir(root: Path, classes: list[str], search_run: Path | None = None, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arch = macro_arch(6, rng)
    (root / "arch.json").write_text(json.dumps(arch))
    (root / "bundle.json").write_text(
        json.dumps(
            {
                "format": "musicnas-bundle",
                "version": 1,
                "model": {
                    "space": "macro",
                    "in_channels": 1,
                    "num_classes": len(classes),
                    "channels": 16,
                    "dropout": 0.1,
                },
                "features": {"sample_rate": 16000, "n_mels": 64},
                "classes": classes,
                "mean": [0.0] * 64,
                "std": [1.0] * 64,
            }
        )
    )
    # keys as musicnas.training.trainer writes them, plus nested config the summary table must not flood
    headline = {
        "clips": 40,
        "tracks": 8,
        "clip_accuracy": 0.69,
        "track_accuracy": 0.75,
        "macro_f1": 0.66,
        "loss": 0.9,
    }
    summary = {
        "model": {"space": "macro", "arch": arch},
        "epochs": 5,
        "epochs_run": 5,
        "best_epoch": 3,
        "stopped_early": False,
        "val": headline,
        "test": headline,
        "cost": {"params": 54321, "macs": 1_200_000},
        "train_seconds": 12.5,
        "seed": 0,
        "config": {"lr": 0.05, "nested": {"deep": 1}},
        "runtime": {"device": "cpu"},
        "data": {"root": "/x", "classes": classes},
    }
    if search_run is not None:
        summary["search_run"] = str(search_run)
    (root / "summary.json").write_text(json.dumps(summary))
    write_jsonl(
        root / "metrics_epochs.jsonl",
        [
            {
                "epoch": e,
                "train_loss": 2.0 / (e + 1),
                "train_acc": 0.4 + 0.1 * e,
                "val_loss": 2.1 / (e + 1),
                "val_acc": 0.35 + 0.08 * e,
                "lr": 0.05 * (1 - e / 5),
                "time": 2.0,
            }
            for e in range(5)
        ],
    )
    k = len(classes)
    confusion = (rng.integers(0, 4, size=(k, k)) + 10 * np.eye(k, dtype=int)).tolist()
    per_class = {c: {"precision": 0.7, "recall": 0.6, "f1": 0.65, "support": 10} for c in classes}
    (root / "evaluation.json").write_text(
        json.dumps(
            {
                "split": "test",
                **headline,
                "track_macro_f1": 0.7,
                "per_class": per_class,
                "classes": classes,
                "confusion_matrix": confusion,
                "track_confusion_matrix": np.eye(k, dtype=int).tolist(),
            }
        )
    )
    return root


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in IMG_RE.findall(page)]


def assert_valid_png(data: bytes) -> np.ndarray:
    assert data.startswith(PNG_SIGNATURE)
    pixels = mpl_image.imread(io.BytesIO(data), format="png")  # decodes the whole image
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert float(pixels[..., :3].std()) > 0.01  # not a blank canvas
    return pixels


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def section_body(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """A search run and a model that points back to it (with a hostile class name), reported from the model."""
    base = tmp_path_factory.mktemp("report")
    run = make_run_dir(base / "search")
    (run / "ranking.json").write_text(
        json.dumps(
            {
                "shared": [0.3, 0.5, 0.4, 0.6],
                "standalone": [0.6, 0.7, 0.65, 0.8],
                "kendall_tau": 0.67,
                "p_value": 0.33,
            }
        )
    )
    (run / "benchmark.json").write_text(
        json.dumps(
            [
                {"method": "enas", "test_acc_mean": 0.7, "test_acc_std": 0.02, "params": 50000},
                {"method": "random", "test_acc_mean": 0.66, "test_acc_std": 0.03, "params": 48000},
            ]
        )
    )
    model = make_bundle_dir(base / "model", ["blues", EVIL, "jazz", "a & b $x"], search_run=run)
    out = write_report(model, base / "out" / "report.html")
    return out, out.read_text(encoding="utf-8")


def test_full_report_has_every_section_and_valid_images(full_report):
    out, page = full_report
    assert out.is_file()
    ids = section_ids(page)
    for anchor in (
        "summary",
        "search",
        "architecture",
        "candidates",
        "training",
        "evaluation",
        "ranking",
        "benchmark",
        "config",
    ):
        assert anchor in ids, anchor
    images = embedded_pngs(page)
    # search curves, controller probabilities, architecture, training curves, 2 confusions, ranking scatter
    assert len(images) == page.count("<img ") == 7
    for data in images:
        assert_valid_png(data)
    assert 'class="note"' not in section_body(page, "search")  # the run was found through summary.json
    assert "Kendall tau 0.67" in section_body(page, "ranking")
    bench = section_body(page, "benchmark")
    assert "test_acc" in bench and "0.7 &plusmn; 0.02" in bench and "test_acc_mean" not in bench


def test_page_is_self_contained(full_report):
    _, page = full_report
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)="(?!data:image/png;base64,|#)', page)  # no external resources
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page


def test_text_from_inputs_is_escaped(full_report):
    _, page = full_report
    assert EVIL not in page
    assert html_escaped(EVIL) in page  # the class list in the summary
    assert "a &amp; b $x" in page


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_candidates_table_lists_candidates_best_first(full_report):
    _, page = full_report
    body = section_body(page, "candidates")
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td><td class=\"num\">([0-9.]+)</td>", body)
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert [float(r[1]) for r in rows] == pytest.approx([0.6, 0.5, 0.4])
    assert "12,345" in body and "seen" in body


def test_run_dir_alone_skips_model_sections_with_notes(tmp_path):
    run = make_run_dir(tmp_path / "run", space="micro", epochs=2)
    page = render_report(run)
    assert "micro space" in section_body(page, "architecture")
    assert 'class="note"' in section_body(page, "training") and 'class="note"' in section_body(
        page, "evaluation"
    )
    assert "ranking" not in section_ids(page) and "benchmark" not in section_ids(page)
    for data in embedded_pngs(page):
        assert_valid_png(data)
    assert len(embedded_pngs(page)) == 3  # search curves, controller, the two cells in one figure


def test_bundle_without_search_run_or_evaluation(tmp_path):
    model = make_bundle_dir(tmp_path / "model", ["a", "b"])
    (model / "evaluation.json").unlink()
    out = write_report(model)
    assert out == model / "report.html"
    page = out.read_text()
    assert "does not point to a search run" in page
    assert "musicnas evaluate" in section_body(page, "evaluation")
    assert len(embedded_pngs(page)) == 2  # architecture and training curves


def test_folder_with_a_run_and_a_model(tmp_path):
    make_run_dir(tmp_path / "search")
    make_bundle_dir(tmp_path / "model", ["a", "b", "c"])
    page = render_report(tmp_path)
    assert not re.search(r'class="note"', section_body(page, "search"))
    assert not re.search(r'class="note"', section_body(page, "evaluation"))


def test_benchmark_folder_with_baselines_output(tmp_path):
    """A folder holding only what the baselines write: the real benchmark table rows and ranking.json."""
    from musicnas.baselines.ranking import kendall_tau, ranking_result
    from musicnas.baselines.table import summarise

    runs = [
        {"method": m, "seed": s, "clip_acc": acc + 0.01 * s, "track_acc": acc, "params": 1000, "macs": None}
        for m, acc in (("enas", 0.7), ("logreg", 0.5))
        for s in range(3)
    ]
    (tmp_path / "benchmark.json").write_text(json.dumps(summarise(runs)))
    shared, standalone = [0.2, 0.4, 0.3], [0.5, 0.7, 0.8]
    arch = macro_arch(2, np.random.default_rng(0))
    (tmp_path / "ranking.json").write_text(json.dumps(ranking_result(shared, standalone, [arch] * 3)))
    page = render_report(tmp_path)
    assert section_ids(page) == [
        "summary",
        "search",
        "architecture",
        "candidates",
        "training",
        "evaluation",
        "ranking",
        "benchmark",
    ]
    bench = section_body(page, "benchmark")
    assert "0.71 &plusmn; 0.01" in bench and "n/a" in bench  # clip_acc over seeds 0..2; macs missing
    tau, _ = kendall_tau(shared, standalone)
    assert f"Kendall tau {tau:.4f}".rstrip("0") in section_body(page, "ranking")
    assert len(embedded_pngs(page)) == 1


def test_confusion_png_used_when_evaluation_json_has_no_matrix(tmp_path):
    model = make_bundle_dir(tmp_path / "model", ["a", "b"])
    (model / "evaluation.json").write_text(json.dumps({"accuracy": 0.5}))
    from musicnas.report.figures import new_figure, to_png

    fig = new_figure(2, 2)
    fig.add_subplot().plot([0, 1], [1, 0])
    png = to_png(fig)
    (model / "confusion.png").write_bytes(png)
    page = render_report(model)
    assert base64.b64encode(png).decode() in section_body(page, "evaluation")


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("metrics_epochs.jsonl", '{"epoch": 0}\nnot json\n{"epoch": 2}\n', "line 2 is not valid JSON"),
        ("metrics_steps.jsonl", "[1, 2]\n", "not a JSON object"),
        ("metrics_epochs.jsonl", '{"epoch": 0, "val_acc": "high"}\n', "'val_acc' must be a number"),
        ("candidates.json", '{"candidates": 3}', "candidates file"),
        (
            "arch.json",
            '{"format": "musicnas-arch", "version": 1, "space": {"type": "macro", "num_layers": 6}, "flat": [1, 2]}',
            "integers",
        ),
        ("config.json", "{truncated", "not valid JSON"),
        ("ranking.json", '{"shared": [0.1, 0.2], "standalone": [0.3]}', "pair up"),
        ("controller_probs.jsonl", '{"epoch": 0, "decisions": [{"name": "x"}]}\n', "probs"),
    ],
)
def test_malformed_files_give_a_clear_error(tmp_path, filename, content, message):
    run = make_run_dir(tmp_path / "run")
    (run / filename).write_text(content)
    with pytest.raises(MusicnasError, match=re.escape(message)):
        render_report(run)


def test_unfinished_last_line_of_a_live_run_is_tolerated(tmp_path):
    run = make_run_dir(tmp_path / "run")
    with open(run / "metrics_steps.jsonl", "a") as fh:
        fh.write('{"epoch": 9, "phase": "contr')
    page = render_report(run)
    assert "last line is incomplete" in page


def test_missing_or_unrecognised_path(tmp_path):
    with pytest.raises(MusicnasError, match="does not exist"):
        render_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MusicnasError, match="neither a search run"):
        render_report(tmp_path / "empty")


@settings(max_examples=25, deadline=None)
@given(num_layers=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_macro_decoding_recovers_ops_and_skips(num_layers, seed):
    arch = macro_arch(num_layers, np.random.default_rng(seed))
    info = describe_arch(arch)
    flat, pos = arch["flat"], 0
    assert len(info.layers) == num_layers
    for layer_index, layer in enumerate(info.layers):
        assert layer.op == flat[pos]
        bits = flat[pos + 1 : pos + 1 + layer_index]
        assert layer.skips == tuple(i for i, b in enumerate(bits) if b)
        pos += 1 + layer_index
    assert all(0 <= p < num_layers for p in info.pool_layers)


@settings(max_examples=25, deadline=None)
@given(num_nodes=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_micro_decoding_and_cell_outputs(num_nodes, seed):
    arch = micro_arch(num_nodes, np.random.default_rng(seed))
    info = describe_arch(arch)
    assert list(info.cells) == ["normal", "reduction"]
    for c, nodes in enumerate(info.cells.values()):
        assert [x for n in nodes for x in (n.inputs[0], n.ops[0], n.inputs[1], n.ops[1])] == arch["flat"][
            4 * num_nodes * c : 4 * num_nodes * (c + 1)
        ]
        outputs = cell_outputs(nodes)
        used = {i for n in nodes for i in n.inputs}
        assert set(outputs) | used == set(range(num_nodes + 2)) and not set(outputs) & used
        assert num_nodes + 1 in outputs  # the last node is never used by another node


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), layers=st.integers(1, 8), whole=st.booleans())
def test_decoding_agrees_with_the_macro_space(seed, layers, whole):
    """The report decodes the flat form itself; it must read it as the space package does."""
    from musicnas.spaces.macro import MacroSpace

    arch = MacroSpace(num_layers=layers, channels=6, num_branches=4, whole_channels=whole).sample(seed)
    info = describe_arch(arch.to_json())
    assert [layer.skips for layer in info.layers] == [tuple(arch.skip_sources(i)) for i in range(layers)]
    if whole:
        assert tuple(layer.op for layer in info.layers) == arch.ops
    else:
        assert tuple(layer.branches for layer in info.layers) == arch.ranges
    assert info.pool_layers == arch.space.pool_layers


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), nodes=st.integers(1, 6))
def test_decoding_agrees_with_the_micro_space(seed, nodes):
    from musicnas.spaces.micro import MicroSpace

    arch = MicroSpace(num_cells=1, num_nodes=nodes, channels=4).sample(seed)
    info = describe_arch(arch.to_json())
    for name in ("normal", "reduction"):
        cell = getattr(arch, name)
        decoded = info.cells[name]
        assert [(n.inputs[0], n.ops[0], n.inputs[1], n.ops[1]) for n in decoded] == [
            tuple(node) for node in cell
        ]
        assert cell_outputs(decoded) == list(arch.unused(cell))


def test_op_names_match_the_space_packages():
    from musicnas.report.archinfo import MACRO_OPS, MICRO_OPS
    from musicnas.spaces.macro.arch import OP_NAMES
    from musicnas.spaces.micro.arch import OPS

    def norm(names):
        return [n.replace("-", "_").replace(" ", "_") for n in names]

    assert norm(MACRO_OPS) == norm(OP_NAMES) and norm(MICRO_OPS) == norm(OPS)


def test_micro_node_reading_a_later_node_is_rejected():
    arch = micro_arch(3, np.random.default_rng(0))
    arch["flat"][4] = 3  # node 1 reads index 3 = node 1 itself
    with pytest.raises(MusicnasError, match="node 1"):
        describe_arch(arch)


def test_cli_writes_the_report(tmp_path):
    from click.testing import CliRunner

    from musicnas.cli import cli

    run = make_run_dir(tmp_path / "run", epochs=2)
    result = CliRunner().invoke(cli, ["report", str(run), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert Path(result.output.strip().splitlines()[-1]) == tmp_path / "r.html"
    assert section_ids((tmp_path / "r.html").read_text())[0] == "summary"


# ---------------------------------------------------------------- headless browser


def chromium(args: list[str], page: Path, tmp: Path) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line or "Refused to" in line or "Uncaught" in line
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_opens_in_headless_chromium(full_report, tmp_path):
    out, page = full_report
    # 1. The page as written: nothing blocked by its Content-Security-Policy, no console messages.
    shot = tmp_path / "shot.png"
    result = chromium([f"--screenshot={shot}", "--window-size=1200,3000", "--hide-scrollbars"], out, tmp_path)
    assert shot.is_file(), result.stderr[-2000:]
    assert not console_errors(result.stderr), console_errors(result.stderr)
    assert_valid_png(shot.read_bytes())
    # 2. A copy with a checker script (and without the CSP, which would block it): every image decoded.
    # One deliberately truncated PNG is added, so the check is shown to tell a broken image apart.
    probe = tmp_path / "probe.html"
    checker = (
        '<img src="data:image/png;base64,iVBORw0KGgoAAAA=" alt="broken on purpose">'
        "<script>window.addEventListener('load', () => { const imgs = [...document.images];"
        " document.body.setAttribute('data-images', imgs.length + '/' +"
        " imgs.filter(i => i.complete && i.naturalWidth > 0).length); });</script>"
    )
    without_csp = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    probe.write_text(without_csp.replace("</body>", checker + "</body>"))
    result = chromium(["--dump-dom", "--virtual-time-budget=5000"], probe, tmp_path)
    match = re.search(r'data-images="(\d+)/(\d+)"', result.stdout)
    assert match, result.stderr[-2000:]
    total, loaded = int(match[1]), int(match[2])
    assert (total, loaded) == (7 + 1, 7)
    assert not console_errors(result.stderr), console_errors(result.stderr)


def test_number_formatting():
    from musicnas.report.page import fmt

    assert fmt(1234567) == "1,234,567"
    assert fmt(None) == "n/a"
    assert fmt(0.123456) == "0.1235"
    assert fmt(float("nan")) == "nan" and not math.isnan(0.0)
    assert fmt({"mean": 0.5, "std": 0.1}) == "0.5 &plusmn; 0.1"
    assert fmt("<b>") == "&lt;b&gt;"
