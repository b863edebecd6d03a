"""prepare() and FeatureCache: contract, reuse/invalidation, crash safety, bad input, manifests, splits."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_tone_track
from musicnas.data import cache as cache_module
from musicnas.data.cache import FeatureCache, find_caches, open_data, prepare
from musicnas.data.extract import BatchedLogMel
from musicnas.data.features import FeatureConfig
from musicnas.runtime import MusicnasError
from test_data_audio import write_bad_files

SMALL = FeatureConfig(
    sample_rate=8000,
    clip_seconds=1.0,
    clip_hop_seconds=1.0,
    min_seconds=0.5,
    n_fft=256,
    hop_length=128,
    n_mels=16,
)


def make_dataset(root: Path, classes=("a", "b", "c"), tracks=4, seconds=2.0, sr=8000) -> Path:
    for ci, name in enumerate(classes):
        for t in range(tracks):
            write_tone_track(
                root / name / f"{name}{t}.wav",
                150.0 * (ci + 1) * (1 + 0.05 * t),
                seconds,
                sr=sr,
                seed=10 * ci + t,
            )
    return root


def quick_prepare(data, cache_dir, config=SMALL, **kw):
    kw.setdefault("workers", 1)
    return prepare(data, cache_dir, config, show_progress=False, device="cpu", **kw)


# ---------------------------------------------------------------------------------------- contract
def test_tiny_cache_contract(tiny_cache):
    c = tiny_cache
    n = len(c)
    assert n == 18 and c.num_classes == 3 and c.classes == ["high", "low", "mid"]
    assert c.input_shape == (1, 64, 94) == c.config.input_shape
    assert c.labels.dtype == np.int64 and c.track_ids.dtype == np.int64
    assert c.labels.shape == c.splits.shape == c.track_ids.shape == c.offsets.shape == (n,)
    assert len(c.paths) == n and all(Path(p).is_file() for p in c.paths)
    assert c.mean.shape == c.std.shape == (64,) and c.mean.dtype == np.float32
    assert set(c.splits) == {"train", "val", "test"}
    parts = [c.split_indices(s) for s in ("train", "val", "test")]
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    # no track crosses splits
    splits_of_track = defaultdict(set)
    for t, s in zip(c.track_ids, c.splits, strict=True):
        splits_of_track[t].add(s)
    assert all(len(s) == 1 for s in splits_of_track.values())
    # every class in every split (6 tracks per class)
    for split in ("train", "val", "test"):
        assert set(c.labels[c.split_indices(split)]) == {0, 1, 2}


def test_get_batch_order_normalisation_and_train_only_stats(tiny_cache):
    c = tiny_cache
    idx = [5, 2, 5, 0]
    x, y = c.get_batch(idx)
    assert x.shape == (4, 1, 64, 94) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == c.labels[idx].tolist()
    torch.testing.assert_close(x[0], x[2])
    raw, _ = c.get_batch(np.array(idx), normalize=False)
    torch.testing.assert_close(raw[1, 0], torch.from_numpy(c.features[2].astype(np.float32)))
    expected = (raw - torch.from_numpy(c.mean)[:, None]) / torch.from_numpy(c.std)[:, None]
    torch.testing.assert_close(x, expected)
    train = c.features[c.split_indices("train")].astype(np.float64)
    np.testing.assert_allclose(c.mean, train.mean(axis=(0, 2)), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(c.std, np.maximum(train.std(axis=(0, 2)), 0.1), rtol=1e-3, atol=1e-3)
    everything = c.features[:].astype(np.float64).mean(axis=(0, 2))
    assert np.abs(everything - c.mean).max() > 1e-2  # statistics really exclude val/test
    with pytest.raises(IndexError):
        c.get_batch([len(c)])


def test_cache_pickles_without_copying_features(tiny_cache):
    blob = pickle.dumps(tiny_cache)
    assert len(blob) < tiny_cache.features.nbytes
    clone = pickle.loads(blob)
    torch.testing.assert_close(clone.get_batch([3])[0], tiny_cache.get_batch([3])[0])


def test_features_match_direct_logmel(tiny_cache):
    """Stored features are LogMel of the clip (float16 rounding only)."""
    from musicnas.data.audio import load_audio
    from musicnas.data.features import LogMel

    c = tiny_cache
    i = 7
    wave = load_audio(c.paths[i], c.config.sample_rate)
    start = int(round(c.offsets[i] * c.config.sample_rate))
    direct = LogMel(c.config)(torch.from_numpy(wave[start : start + c.config.clip_samples])).numpy()
    np.testing.assert_allclose(c.features[i].astype(np.float32), direct, atol=0.05)


# ------------------------------------------------------------------------------- reuse/invalidation
def test_same_options_reuse_the_cache(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "audio")
    first = quick_prepare(data, tmp_path / "cache")
    stamp = (first.root / "meta.json").stat().st_mtime_ns

    def must_not_build(*args, **kwargs):
        raise AssertionError("cache was rebuilt although nothing changed")

    monkeypatch.setattr(cache_module.builder, "build_cache", must_not_build)
    again = quick_prepare(data, tmp_path / "cache", workers=2)  # workers do not change the contents
    assert again.root == first.root
    assert (again.root / "meta.json").stat().st_mtime_ns == stamp
    assert open_data(data, tmp_path / "cache", SMALL).root == first.root


@pytest.mark.parametrize(
    "change",
    ["n_mels", "fmax", "clip_hop", "seed", "val_fraction", "file_touched", "file_added", "file_relabelled"],
)
def test_changing_one_option_rebuilds(tmp_path, change):
    data = make_dataset(tmp_path / "audio")
    first = quick_prepare(data, tmp_path / "cache")
    config, kw = SMALL, {}
    if change == "n_mels":
        config = dataclasses.replace(SMALL, n_mels=20)
    elif change == "fmax":
        config = dataclasses.replace(SMALL, fmax=3000.0)
    elif change == "clip_hop":
        config = dataclasses.replace(SMALL, clip_hop_seconds=0.5)
    elif change == "seed":
        kw["seed"] = 1
    elif change == "val_fraction":
        kw["val_fraction"] = 0.3
    elif change == "file_touched":
        st = os.stat(data / "a" / "a0.wav")
        os.utime(data / "a" / "a0.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    elif change == "file_added":
        write_tone_track(data / "b" / "extra.wav", 500.0, 2.0, sr=8000)
    elif change == "file_relabelled":
        (data / "c" / "c0.wav").rename(data / "b" / "c0.wav")
    second = quick_prepare(data, tmp_path / "cache", config, **kw)
    assert second.root != first.root
    assert len(find_caches(tmp_path / "cache")) == 2
    if change == "n_mels":
        assert second.input_shape == (1, 20, SMALL.frames)
    if change == "clip_hop":
        assert len(second) > len(first)
    if change == "file_added":
        assert len(second) == len(first) + 2


# ------------------------------------------------------------------------------------ crash safety
CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from musicnas.data import extract
    from musicnas.data.cache import prepare
    from musicnas.data.features import FeatureConfig

    calls = {"n": 0}
    real = extract.BatchedLogMel.__call__

    def dying(self, clips):
        calls["n"] += 1
        if calls["n"] == 3:
            os._exit(3)  # like a kill: no cleanup, no finally blocks
        return real(self, clips)

    extract.BatchedLogMel.__call__ = dying
    config = FeatureConfig(**{cfg})
    prepare(sys.argv[1], sys.argv[2], config, workers=1, batch_size=2, device="cpu", show_progress=False)
    """
)


def test_crash_mid_write_leaves_no_valid_cache(tmp_path):
    data = make_dataset(tmp_path / "audio")
    cache_dir = tmp_path / "cache"
    script = CRASH_SCRIPT.replace("{cfg}", repr(SMALL.to_dict()))
    env = dict(os.environ, MUSICNAS_NO_REEXEC="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", script, str(data), str(cache_dir)], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == 3, proc.stderr.decode()[-2000:]
    leftovers = [p for p in cache_dir.iterdir()]
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)
    assert (leftovers[0] / "features.npy").stat().st_size > 0  # it died mid-write
    assert find_caches(cache_dir) == []
    with pytest.raises(MusicnasError, match="not usable"):
        FeatureCache.open(leftovers[0])
    # the next run builds a good cache and clears the dead build
    cache = quick_prepare(data, cache_dir)
    assert len(cache) == 24 and [p.name for p in cache_dir.iterdir()] == [cache.root.name]


def test_interrupt_in_process_cleans_up(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "audio")

    def interrupted(self, clips):
        raise KeyboardInterrupt

    monkeypatch.setattr(BatchedLogMel, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quick_prepare(data, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate_features", "drop_meta", "edit_shape", "drop_splits_row"])
def test_damaged_cache_is_refused_then_rebuilt(tmp_path, damage):
    data = make_dataset(tmp_path / "audio")
    cache = quick_prepare(data, tmp_path / "cache")
    root = cache.root
    del cache
    if damage == "truncate_features":
        with open(root / "features.npy", "r+b") as fh:
            fh.truncate(os.path.getsize(root / "features.npy") - 1000)
    elif damage == "drop_meta":
        (root / "meta.json").unlink()
    elif damage == "edit_shape":
        meta = json.loads((root / "meta.json").read_text())
        meta["num_clips"] += 1
        (root / "meta.json").write_text(json.dumps(meta))
    elif damage == "drop_splits_row":
        lines = (root / "splits.csv").read_text().splitlines(keepends=True)
        (root / "splits.csv").write_text("".join(lines[:-1]))
    with pytest.raises(MusicnasError, match="not usable"):
        FeatureCache.open(root)
    rebuilt = quick_prepare(data, tmp_path / "cache")
    assert rebuilt.root == root and len(rebuilt) == 24


# -------------------------------------------------------------------------------------- bad input
def test_bad_files_are_skipped_once_each_and_counted(tmp_path, caplog):
    data = make_dataset(tmp_path / "audio")
    expected = write_bad_files(data / "b")
    (data / "b" / "good.wav").unlink()
    write_tone_track(data / "c" / "padded.wav", 400.0, 0.7, sr=8000)  # shorter than a clip, kept padded
    with caplog.at_level("WARNING", logger="musicnas"):
        cache = quick_prepare(data, tmp_path / "cache", workers=2)
    warned = [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "skipping" in r.getMessage()
    ]
    assert len(warned) == len(expected)
    for name in expected:
        assert sum(name in w for w in warned) == 1
    summary = cache.summary()
    assert summary["skipped"]["count"] == len(expected)
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]["files"]}
    for name, fragment in expected.items():
        assert fragment in reasons[name]
    padded = [i for i, p in enumerate(cache.paths) if p.endswith("padded.wav")]
    assert len(padded) == 1 and cache.offsets[padded[0]] == 0.0
    assert len(cache) == 24 + 1


def test_class_without_usable_audio_is_an_error(tmp_path):
    data = make_dataset(tmp_path / "audio", classes=("a", "b"))
    write_bad_files(tmp_path / "audio" / "broken")
    (data / "broken" / "good.wav").unlink()
    with pytest.raises(MusicnasError, match="class 'broken' has no usable audio.*silent"):
        quick_prepare(data, tmp_path / "cache")
    assert find_caches(tmp_path / "cache") == []


def test_split_left_without_data_is_an_error(tmp_path):
    data = make_dataset(tmp_path / "audio", classes=("a", "b"), tracks=1)
    with pytest.raises(MusicnasError, match="test would hold no clips"):
        quick_prepare(data, tmp_path / "cache")


def test_missing_data_path_is_an_error(tmp_path):
    with pytest.raises(MusicnasError, match="does not exist"):
        open_data(tmp_path / "missing", tmp_path / "cache")


# ------------------------------------------------------------------------------- manifests, splits
def write_album_manifest(tmp_path, split_column=None):
    audio = make_dataset(tmp_path / "audio", tracks=8)
    lines = ["path,label,group" + (",split" if split_column else "")]
    for label in ("a", "b", "c"):
        for t in range(8):
            row = f"../audio/{label}/{label}{t}.wav,{label},{label}-album{t // 2}"
            if split_column:
                row += "," + split_column(label, t)
            lines.append(row)
    (tmp_path / "lists").mkdir()
    manifest = tmp_path / "lists" / "data.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return audio, manifest


def test_manifest_groups_never_cross_splits(tmp_path):
    _, manifest = write_album_manifest(tmp_path)
    cache = quick_prepare(manifest, tmp_path / "cache")
    assert len(cache.groups) == 12 and len(cache) == 48
    by_group = defaultdict(set)
    for g, s in zip(cache.track_ids, cache.splits, strict=True):
        by_group[g].add(s)
    assert all(len(s) == 1 for s in by_group.values())
    assert all(
        len(np.unique(cache.track_ids[[i for i, p in enumerate(cache.paths) if f"/{x}/" in p]])) == 4
        for x in "abc"
    )
    for split in ("train", "val", "test"):
        assert set(cache.labels[cache.split_indices(split)]) == {0, 1, 2}


def test_explicit_split_column_wins(tmp_path):
    def chosen(label, t):
        return "test" if t == 0 else "val" if t == 1 else "train"

    _, manifest = write_album_manifest(tmp_path, chosen)
    # groups hold pairs (t=0,1 share an album): split by column must still win per file
    lines = manifest.read_text().splitlines()
    lines = [lines[0]] + [line.replace("-album0", f"-solo{i}") for i, line in enumerate(lines[1:])]
    manifest.write_text("\n".join(lines) + "\n")
    cache = quick_prepare(manifest, tmp_path / "cache")
    for path, split in zip(cache.paths, cache.splits, strict=True):
        t = int(Path(path).stem[1:])
        assert split == chosen(None, t)


def test_partial_split_column_keeps_groups_together(tmp_path):
    _, manifest = write_album_manifest(tmp_path, lambda label, t: "test" if t == 0 else "")
    cache = quick_prepare(manifest, tmp_path / "cache")
    stems = {Path(p).stem: s for p, s in zip(cache.paths, cache.splits, strict=True)}
    for label in "abc":
        assert stems[f"{label}0"] == stems[f"{label}1"] == "test"  # t=1 shares album0 with t=0


def test_splits_are_deterministic_for_a_seed(tmp_path):
    data = make_dataset(tmp_path / "audio", tracks=10, seconds=1.2)
    a = quick_prepare(data, tmp_path / "c1", seed=5)
    b = quick_prepare(data, tmp_path / "c2", seed=5)
    c = quick_prepare(data, tmp_path / "c3", seed=6)
    assert (a.root / "splits.csv").read_text() == (b.root / "splits.csv").read_text()
    assert list(a.splits) != list(c.splits)
    np.testing.assert_array_equal(np.asarray(a.features), np.asarray(b.features))
    header = (a.root / "splits.csv").read_text().splitlines()[0]
    assert header == "path,group,label,split,offset"


def test_open_data_accepts_cache_folders(tmp_path, caplog):
    data = make_dataset(tmp_path / "audio")
    built = quick_prepare(data, tmp_path / "cache")
    assert open_data(built.root).root == built.root
    assert open_data(tmp_path / "cache").root == built.root  # the only cache in the folder
    with caplog.at_level("WARNING", logger="musicnas"):
        assert open_data(built.root, config=FeatureConfig()).config == SMALL
    assert "own feature options" in caplog.text
    quick_prepare(data, tmp_path / "cache", seed=3)
    with pytest.raises(MusicnasError, match="2 complete feature caches"):
        open_data(tmp_path / "cache")


def test_summary_counts(tmp_path):
    data = make_dataset(tmp_path / "audio", tracks=6, seconds=2.5)
    s = quick_prepare(data, tmp_path / "cache").summary()
    assert s["clips"] == 36 and s["num_classes"] == 3
    assert sum(sp["clips"] for sp in s["splits"].values()) == 36
    assert sum(sp["groups"] for sp in s["splits"].values()) == 18
    assert sum(sp["hours"] for sp in s["splits"].values()) == pytest.approx(18 * 2.5 / 3600, abs=1e-3)
    assert s["splits"]["val"]["clips_per_class"] == {"a": 2, "b": 2, "c": 2}
    json.dumps(s)  # JSON-ready
