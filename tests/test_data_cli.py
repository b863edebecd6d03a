"""`musicnas data prepare|inspect|synth` through the real entry point."""

from __future__ import annotations

import json
import sys
import types

import pytest

from musicnas.cli import main
from test_data_cache import make_dataset


def run(args, capsys):
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


SMALL_OPTIONS = [
    "--sample-rate",
    "8000",
    "--clip-seconds",
    "1",
    "--n-fft",
    "256",
    "--hop-length",
    "128",
    "--n-mels",
    "16",
]


def test_prepare_then_inspect(tmp_path, capsys):
    data = make_dataset(tmp_path / "audio")
    (data / "a" / "broken.wav").write_text("not audio")
    cache_dir = tmp_path / "cache"
    common = ["--cache", str(cache_dir), "--workers", "1", "--threads", "1", "--device", "cpu"]
    code, out, err = run(
        ["data", "prepare", "--data", str(data), *common, *SMALL_OPTIONS, "--seed", "2", "--json"], capsys
    )
    assert code == 0, err
    prepared = json.loads(out)
    assert prepared["clips"] == 24 and prepared["input_shape"] == [1, 16, 63] and prepared["seed"] == 2
    assert prepared["skipped"]["count"] == 1
    code, out, err = run(["data", "inspect", "--cache", str(cache_dir), "--json"], capsys)
    assert code == 0 and json.loads(out)["key"] == prepared["key"]
    code, out, _ = run(["data", "inspect", "--cache", str(cache_dir)], capsys)
    assert code == 0
    assert "classes   3: a, b, c" in out and "broken.wav: not audio: the file holds text" in out
    assert out.count("\ntrain ") == 1 and "\nval " in out and "\ntest " in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "prepare", "--data", "{tmp}/nothing"], "does not exist"),
        (["data", "inspect", "--cache", "{tmp}"], "no prepared feature cache"),
        (["data", "prepare", "--data", "{tmp}", "--n-mels", "0"], "0 is not in the range 1<=x<=512"),
    ],
)
def test_user_errors_exit_2_without_traceback(tmp_path, capsys, args, message):
    code, _, err = run([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_synth_forwards_options(tmp_path, capsys, monkeypatch):
    calls = {}

    def fake_generate(out_dir, seed=0, num_classes=8, tracks_per_class=24, seconds=15.0, workers=None):
        calls.update(
            out_dir=out_dir,
            seed=seed,
            num_classes=num_classes,
            tracks=tracks_per_class,
            seconds=seconds,
            workers=workers,
        )
        return {"classes": num_classes, "tracks": num_classes * tracks_per_class}

    monkeypatch.setitem(
        sys.modules, "musicnas.data.synth", types.SimpleNamespace(generate_dataset=fake_generate)
    )
    args = [
        "data",
        "synth",
        "--out",
        str(tmp_path / "o"),
        "--seed",
        "4",
        "--classes",
        "3",
        "--tracks-per-class",
        "2",
    ]
    code, out, err = run([*args, "--seconds", "5", "--workers", "1"], capsys)
    assert code == 0, err
    assert calls == {
        "out_dir": tmp_path / "o",
        "seed": 4,
        "num_classes": 3,
        "tracks": 2,
        "seconds": 5.0,
        "workers": 1,
    }
    assert json.loads(out) == {"classes": 3, "tracks": 6}
