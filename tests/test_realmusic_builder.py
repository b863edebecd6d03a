"""benchmarks/realmusic/build.py on generated audio: window choice, silence skipping, variant grouping,
the group split, screening and a whole build from locally made .debs (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from argparse import Namespace
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicnas.data.sources import find_audio

BUILD_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "realmusic" / "build.py"


@pytest.fixture(scope="module")
def rm():
    spec = importlib.util.spec_from_file_location("realmusic_build", BUILD_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules["realmusic_build"] = module
    spec.loader.exec_module(module)
    return module


def music(seconds: float, sr: int, freq: float = 220.0, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3)) * (
        0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)
    )
    return (amp * wave / np.max(np.abs(wave)) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def args_for(**overrides):
    base = dict(seconds=10.0, clips_per_class=12, seed=0, sample_rate=22050, min_track_seconds=30.0)
    base.update(overrides)
    return Namespace(**base)


# --- silence and windows --------------------------------------------------------------------------


def test_usable_starts_skip_windows_touching_a_long_silence(rm):
    sr = 8000
    audio = music(40.0, sr)
    audio[int(15 * sr) : int(22 * sr)] = 0.0  # 7 s of digital silence
    db = rm.frame_rms_db(audio, sr)
    assert len(db) == 80  # 0.5-s frames
    usable = rm.usable_starts(db, window_frames=20)  # 10-s windows
    starts_s = usable * rm.FRAME_SECONDS
    # a window is refused once more than 25% (2.5 s) of it is silent: [15 - 10 + 2.5, 22 - 2.5] s
    assert not np.any((starts_s > 7.5) & (starts_s < 19.5))
    assert 0.0 in starts_s and 22.0 in starts_s and 30.0 in starts_s
    assert 7.5 in starts_s and 19.5 in starts_s  # exactly 25% silent is still accepted


def test_usable_starts_refuse_a_quiet_passage_relative_to_its_track(rm):
    sr = 8000
    audio = music(40.0, sr, amp=1.0)
    audio[: int(12 * sr)] *= 10 ** (-29 / 20)  # a 12-s intro 29 dB quieter: above the absolute floor
    db = rm.frame_rms_db(audio, sr)
    assert np.median(db[:24]) > rm.SILENCE_DB
    starts_s = rm.usable_starts(db, window_frames=20) * rm.FRAME_SECONDS
    assert not np.any(starts_s < 2.0)  # windows (nearly) all intro are refused for being quiet for this track
    assert 12.0 in starts_s and 30.0 in starts_s


def test_window_slots_do_not_overlap_and_spread_pick_covers_the_track(rm):
    usable = np.concatenate([np.arange(0, 30), np.arange(50, 120)])  # a hole of refused starts
    slots = rm.window_slots(usable, window_frames=20, phase=3)
    assert slots[0] == 3
    assert np.all(np.diff(slots) >= 20)
    assert set(slots) <= set(usable.tolist())
    assert slots == [3, 23, 50, 70, 90, 110]
    picked = rm.spread_pick(slots, 3)
    assert picked == [23, 70, 110]  # the centre slot of each third
    assert rm.spread_pick(slots, 10) == slots
    assert rm.spread_pick(slots, 0) == []


def test_allocate_clips_is_even_and_gives_what_short_tracks_cannot_take_to_the_others(rm):
    alloc = rm.allocate_clips({"a": 10, "b": 10, "c": 10, "d": 10}, 10)
    assert sorted(alloc.values()) == [2, 2, 3, 3] and sum(alloc.values()) == 10
    alloc = rm.allocate_clips({"short": 1, "long1": 20, "long2": 20}, 12)
    assert alloc == {"short": 1, "long1": 6, "long2": 5} or alloc == {"short": 1, "long1": 5, "long2": 6}
    assert rm.allocate_clips({"a": 2, "b": 3}, 100) == {"a": 2, "b": 3}  # capacity caps the total


def test_plan_clips_spreads_over_tracks_and_skips_silence_and_is_seeded(rm):
    sr = 8000
    tracks = []
    for i, seconds in enumerate([45.0, 60.0, 120.0, 35.0]):
        audio = music(seconds, sr, freq=200 + 50 * i, seed=i)
        if i == 2:
            audio[int(40 * sr) : int(70 * sr)] = 0.0
        tracks.append(
            rm.Track(
                "c", f"t{i}.ogg", f"/x/t{i}.ogg", f"t{i}.ogg", frame_db=rm.frame_rms_db(audio, sr).tolist()
            )
        )
    plan = rm.plan_clips(tracks, args_for(clips_per_class=12))
    assert len(plan) == 12
    counts = Counter(t.name for t, _ in plan)
    # 35-s and 45-s tracks hold 3 and 4 non-overlapping 10-s windows: the rest is spread on the others
    assert counts["t3.ogg"] == 3 and counts["t0.ogg"] == 3
    assert counts["t1.ogg"] + counts["t2.ogg"] == 6
    by_track = defaultdict(list)
    for t, start in plan:
        by_track[t.name].append(start)
    for name, starts in by_track.items():
        starts.sort()
        assert np.all(np.diff(starts) >= 10.0), name
    for start in by_track["t2.ogg"]:
        assert start + 10.0 <= 40.0 + 2.5 or start >= 70.0 - 2.5  # never mostly inside the silence
    again = rm.plan_clips(tracks, args_for(clips_per_class=12))
    assert [(t.name, s) for t, s in again] == [(t.name, s) for t, s in plan]
    other = rm.plan_clips(tracks, args_for(clips_per_class=12, seed=1))
    assert [(t.name, s) for t, s in other] != [(t.name, s) for t, s in plan]


# --- grouping and split ---------------------------------------------------------------------------


def test_composition_groups_join_versions_and_keep_numbered_pieces_apart(rm):
    names = [
        "farm.ogg",
        "farm_f.ogg",
        "jumping_to_the_stars_remake.ogg",
        "jumping_to_the_stars_remake_fast.ogg",
        "frantic.ogg",
        "frantic-old.ogg",
        "forest.ogg",
        "forest2.ogg",
        "forest3.ogg",
        "ambient2.ogg",
        "ambient2_5.ogg",
        "airship_2.ogg",
        "airship_remix.ogg",
        "Olivier_Militon.-.Apnee.ogg",
        "Olivier_Militon.-.Apnee2.ogg",
        "combat1.ogg",
        "combat2.ogg",
        "ingame_07.ogg",
        "ingame_08.ogg",
        "Taiko_1.ogg",
        "Taiko_2.ogg",
        "cave_old.ogg",
        "cave.ogg",
        "fast.ogg",
    ]
    g = rm.composition_groups(names)
    same = [
        ("farm.ogg", "farm_f.ogg"),
        ("jumping_to_the_stars_remake.ogg", "jumping_to_the_stars_remake_fast.ogg"),
        ("frantic.ogg", "frantic-old.ogg"),
        ("forest.ogg", "forest2.ogg"),
        ("forest.ogg", "forest3.ogg"),
        ("ambient2.ogg", "ambient2_5.ogg"),
        ("airship_2.ogg", "airship_remix.ogg"),
        ("Olivier_Militon.-.Apnee.ogg", "Olivier_Militon.-.Apnee2.ogg"),
        ("cave.ogg", "cave_old.ogg"),
    ]
    for a, b in same:
        assert g[a] == g[b], (a, b)
    apart = [
        ("combat1.ogg", "combat2.ogg"),
        ("ingame_07.ogg", "ingame_08.ogg"),
        ("Taiko_1.ogg", "Taiko_2.ogg"),
        ("ambient2.ogg", "farm.ogg"),
        ("fast.ogg", "farm.ogg"),
    ]
    for a, b in apart:
        assert g[a] != g[b], (a, b)
    assert g["fast.ogg"] == "fast"  # a suffix word alone is a name, not a version marker


def test_split_by_group_is_60_20_20_per_class_seeded_and_never_splits_a_group(rm):
    group_labels = {f"{c}/g{i}": c for c in ("a", "b", "c") for i in range(15)}
    splits = rm.split_by_group(group_labels, seed=0)
    assert set(splits) == set(group_labels)
    for c in ("a", "b", "c"):
        counts = Counter(s for g, s in splits.items() if group_labels[g] == c)
        assert counts == {"train": 9, "val": 3, "test": 3}
    assert rm.split_by_group(group_labels, seed=0) == splits
    assert rm.split_by_group(group_labels, seed=1) != splits
    small = rm.split_by_group({f"s/g{i}": "s" for i in range(3)}, seed=5)
    assert sorted(small.values()) == ["test", "train", "val"]


# --- audio: analysis, screening, cutting ------------------------------------------------------------


def write(path: Path, audio: np.ndarray, sr: int, stereo: bool = True) -> Path:
    """Stereo Ogg Vorbis for .ogg names (as the packages ship), else whatever the suffix says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([audio, audio * 0.8], axis=1) if stereo else audio
    if path.suffix == ".ogg":
        sf.write(path, data, sr, format="OGG", subtype="VORBIS")
    else:
        sf.write(path, data, sr)
    return path


def lowpass(audio: np.ndarray, sr: int, cutoff: float) -> np.ndarray:
    spectrum = np.fft.rfft(audio)
    spectrum[np.fft.rfftfreq(len(audio), 1 / sr) > cutoff] = 0
    return np.fft.irfft(spectrum, n=len(audio)).astype(np.float32)


def broadband(seconds: float, sr: int, seed: int) -> np.ndarray:
    """Noise plus tones under a seeded random loudness envelope (so distinct tracks have distinct envelopes)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    levels = rng.uniform(0.3, 1.0, int(seconds) + 2)
    envelope = np.interp(np.arange(n) / sr, np.arange(len(levels)), levels)
    return ((0.1 * rng.standard_normal(n) + music(seconds, sr, seed=seed)) * envelope * 0.5).astype(
        np.float32
    )


def test_screen_drops_jingles_low_bandwidth_and_duplicates(rm, tmp_path):
    sr = 22050  # short tracks and a 6-s minimum keep it fast; the rules do not depend on scale
    files = {
        "a/good.ogg": broadband(7, sr, 1),
        "a/jingle.ogg": broadband(3, sr, 2),
        "a/dull.wav": lowpass(broadband(7, sr, 3), sr, 5000.0),
        "a/other.ogg": broadband(10, sr, 4),
        "b/shared.ogg": broadband(8, sr, 5),
        "b/own.wav": broadband(6.5, sr, 6),
    }
    for rel, audio in files.items():
        write(tmp_path / rel, audio, sr)
    shutil.copy(tmp_path / "a/good.ogg", tmp_path / "a/good_copy.ogg")  # byte-identical
    shutil.copy(tmp_path / "b/shared.ogg", tmp_path / "a/shared.ogg")  # in two classes
    # the start of other.ogg, re-encoded and cut shorter: another length, so not called a duplicate
    sf.write(tmp_path / "a/reencoded.flac", files["a/other.ogg"][: int(7 * sr)] * 0.9, sr)
    tracks = []
    for p in sorted(tmp_path.glob("*/*.*")):
        t = rm.Track(p.parent.name, p.name, str(p), p.name)
        rm.analyse(t, tmp_path / "cache")
        tracks.append(t)
    # a re-encode of the same recording at the same length is a duplicate
    write(tmp_path / "a2/other_v.wav", files["a/other.ogg"] * 0.7, sr)
    t = rm.Track("a", "other_v.wav", str(tmp_path / "a2/other_v.wav"), "other_v.wav")
    rm.analyse(t, tmp_path / "cache")
    tracks.append(t)
    kept, dropped = rm.screen(tracks, args_for(min_track_seconds=6.0))
    kept_names = sorted(f"{t.label}/{t.name}" for t in kept)
    assert kept_names == ["a/good.ogg", "a/other.ogg", "a/reencoded.flac", "b/own.wav"]
    reasons = {f"{label}/{name}": reason for label, name, reason in dropped}
    assert "jingle" in reasons["a/jingle.ogg"]
    assert "low-bandwidth" in reasons["a/dull.wav"]
    assert "byte-identical" in reasons["a/good_copy.ogg"]
    assert "another class" in reasons["a/shared.ogg"] and "another class" in reasons["b/shared.ogg"]
    assert "same recording as other.ogg" in reasons["a/other_v.wav"]
    # the analysis is cached by content: a second pass reads the record instead of decoding
    record = next((tmp_path / "cache" / "analysis").glob("*.json"))
    assert record.stat().st_size > 0


def test_measured_bandwidth_finds_a_lowpass_edge(rm):
    sr = 44100
    full = broadband(10, sr, 0)
    assert rm.measured_bandwidth(full, sr) > 18000
    edge = rm.measured_bandwidth(lowpass(full, sr, 8000.0), sr)
    assert 7500 < edge < 8600


def test_read_window_cuts_the_right_part_resampled_and_normalised(rm, tmp_path):
    sr = 44100
    t = np.arange(int(20 * sr)) / sr
    audio = (
        np.where(t < 8.0, np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 1000 * t)).astype(np.float32) * 0.5
    )
    path = tmp_path / "two.wav"
    sf.write(path, np.stack([audio, audio], axis=1), sr)
    clip = rm.read_window(str(path), 9.0, 5.0, 22050)
    assert clip.shape == (5 * 22050,)
    peak = np.argmax(np.abs(np.fft.rfft(clip))) * 22050 / len(clip)
    assert abs(peak - 1000) < 2
    early = rm.read_window(str(path), 1.0, 5.0, 22050)
    assert abs(np.argmax(np.abs(np.fft.rfft(early))) * 22050 / len(early) - 440) < 2
    out = rm.rms_normalise(clip)
    assert abs(20 * np.log10(np.sqrt(np.mean(out.astype(np.float64) ** 2))) - rm.TARGET_RMS_DB) < 0.05
    spiky = np.zeros(1000, dtype=np.float32)
    spiky[10] = 1.0
    assert np.max(np.abs(rm.rms_normalise(spiky))) <= rm.PEAK_LIMIT + 1e-6  # no clipping


def test_dep5_licence_lookup_last_match_wins_and_matches_path_tails(rm):
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2010 Studio\nLicense: GPL-2+\n\n"
        "Files: data/music/*\n  extra/theme.ogg\nCopyright: 2012 Composer A\nLicense: CC-BY-SA-3.0\n\n"
        "Files: data/music/special.ogg\nCopyright: 2013 B\nLicense: CC0\n  The text.\n"
    )
    paragraphs = rm.parse_dep5(text)
    assert rm.licence_for("usr/share/games/x/data/music/a.ogg", paragraphs) == (
        "CC-BY-SA-3.0",
        "2012 Composer A",
    )
    assert rm.licence_for("usr/share/games/x/extra/theme.ogg", paragraphs)[0] == "CC-BY-SA-3.0"
    assert rm.licence_for("usr/share/games/x/data/music/special.ogg", paragraphs)[0] == "CC0"
    assert rm.licence_for("usr/share/games/x/sounds/a.ogg", paragraphs)[0] == "GPL-2+"
    assert rm.parse_dep5("This package was debianized by someone.\n\nGPL.\n") == []


# --- a whole build from local .debs -------------------------------------------------------------------


def make_deb(root: Path, cache: Path, package: str, tracks: dict[str, np.ndarray], sr: int) -> None:
    tree = root / package
    for name, audio in tracks.items():
        write(tree / "usr/share/games" / package / "music" / name, audio, sr)
    doc = tree / "usr/share/doc" / package
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        f"Files: *\nCopyright: 2020 {package} team\nLicense: CC-BY-SA-4.0\n"
    )
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n"
    )
    subprocess.run(
        ["dpkg-deb", "--build", "-Zgzip", str(tree), str(cache / f"{package}_1.0_all.deb")],
        check=True,
        capture_output=True,
    )


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
def test_build_from_cached_debs_writes_a_manifest_musicnas_reads_and_resumes(rm, tmp_path, monkeypatch):
    sr = 22050
    cache, out = tmp_path / "cache", tmp_path / "out"
    cache.mkdir()
    alpha = {f"piece{i}.ogg": broadband(7 + i, sr, i) for i in range(5)}
    alpha |= {"jingle.ogg": broadband(3, sr, 9), "piece1_old.ogg": broadband(6.5, sr, 7)}
    make_deb(tmp_path / "pkgs", cache, "alpha-data", alpha, sr)
    beta = {f"song_{c}.ogg": broadband(6 + i, sr, 20 + i) for i, c in enumerate("abcde")}
    make_deb(tmp_path / "pkgs", cache, "beta-data", beta, sr)
    specs = {
        "alpha": rm.ClassSpec("alpha", "alpha-data", ("usr/share/games/alpha-data/music/*.ogg",)),
        "beta": rm.ClassSpec("beta", "beta-data", ("usr/share/games/beta-data/music/*.ogg",)),
    }
    monkeypatch.setattr(rm, "CLASS_SPECS", specs)
    real_which = shutil.which  # no apt-get: a download attempt would fail the build
    monkeypatch.setattr(rm.shutil, "which", lambda name: None if name == "apt-get" else real_which(name))
    argv = [
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--classes",
        "alpha,beta",
        "--clips-per-class",
        "10",
        "--seconds",
        "2",
        "--min-tracks",
        "5",
        "--min-track-seconds",
        "6",
    ]
    assert rm.main(argv) == 0

    source = find_audio(out / "manifest.csv")
    assert source.classes == ["alpha", "beta"]
    assert Counter(f.label for f in source.files) == {"alpha": 10, "beta": 10}
    assert all(f.split in ("train", "val", "test") for f in source.files)
    split_of_group = defaultdict(set)
    for f in source.files:
        split_of_group[f.group].add(f.split)
        info = sf.info(f.path)
        assert (info.samplerate, info.channels, info.frames) == (22050, 1, 2 * 22050)
    assert all(len(s) == 1 for s in split_of_group.values())
    for label in ("alpha", "beta"):
        assert {f.split for f in source.files if f.label == label} == {"train", "val", "test"}
    groups = {f.group for f in source.files}
    assert "alpha/piece1" in groups and not any("old" in g for g in groups)  # piece1_old joined piece1
    dropped = (out / "dropped.csv").read_text()
    assert "jingle.ogg" in dropped
    licences = (out / "LICENSES").read_text()
    assert "piece0.ogg: CC-BY-SA-4.0  (2020 alpha-data team)" in licences

    manifest = (out / "manifest.csv").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/*.flac")}
    assert rm.main(argv) == 0  # resumes: same manifest, no clip rewritten, nothing downloaded
    assert (out / "manifest.csv").read_text() == manifest
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.flac")} == mtimes
    assert rm.main([*argv, "--seed", "3"]) == 2  # other options, same folder


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
def test_build_refuses_a_class_with_too_few_tracks(rm, tmp_path, monkeypatch, capsys):
    sr = 22050
    cache = tmp_path / "cache"
    cache.mkdir()
    make_deb(
        tmp_path / "pkgs", cache, "tiny-data", {f"p{i}.ogg": broadband(6 + i, sr, i) for i in range(3)}, sr
    )
    make_deb(
        tmp_path / "pkgs",
        cache,
        "tiny2-data",
        {f"q{i}.ogg": broadband(6 + i, sr, 10 + i) for i in range(3)},
        sr,
    )
    monkeypatch.setattr(
        rm,
        "CLASS_SPECS",
        {
            "tiny": rm.ClassSpec("tiny", "tiny-data", ("usr/share/games/tiny-data/music/*.ogg",)),
            "tiny2": rm.ClassSpec("tiny2", "tiny2-data", ("usr/share/games/tiny2-data/music/*.ogg",)),
        },
    )
    real_which = shutil.which  # no apt-get: a download attempt would fail the build
    monkeypatch.setattr(rm.shutil, "which", lambda name: None if name == "apt-get" else real_which(name))
    code = rm.main(
        [
            "--out",
            str(tmp_path / "o"),
            "--cache",
            str(cache),
            "--classes",
            "tiny,tiny2",
            "--min-track-seconds",
            "5",
        ]
    )
    assert code == 2
    assert "class tiny keeps 3 track(s)" in capsys.readouterr().err
    assert rm.main(["--out", str(tmp_path / "o2"), "--cache", str(cache), "--classes", "tiny,nope"]) == 2
