"""The demo music composer: determinism, layout, audio sanity, genre differences."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from musicnas.data.synth import GENRES, generate_dataset, load_manifest, render_track, track_rng
from musicnas.data.synth.genres import GENRES_TABLE
from musicnas.data.synth.instruments import INSTRUMENTS, karplus_strong
from musicnas.runtime import MusicnasError

SR = 22050


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_digests(root) -> dict[str, str]:
    return {str(p.relative_to(root)): _digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "demo"
    summary = generate_dataset(out, seed=3, num_classes=3, tracks_per_class=2, seconds=3.0, workers=1)
    return out, summary


def test_layout_balance_and_format(small_set):
    out, summary = small_set
    assert summary["classes"] == list(GENRES[:3])
    assert summary["tracks"] == 6 and summary["seconds"] == pytest.approx(18.0)
    for genre in GENRES[:3]:
        files = sorted((out / genre).glob("*.wav"))
        assert [f.name for f in files] == [f"{genre}_000.wav", f"{genre}_001.wav"]
        for f in files:
            info = sf.info(f)
            assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
            assert info.frames == 3 * SR
    assert not list(out.rglob("*.tmp")), "temporary files left behind"
    manifest = load_manifest(out)
    assert manifest["seed"] == 3 and manifest["tracks_per_class"] == 2 and manifest["sample_rate"] == SR
    assert [t["file"] for t in manifest["tracks"]] == [
        f"{g}/{g}_{i:03d}.wav" for g in GENRES[:3] for i in range(2)
    ]


def test_same_seed_same_bytes_for_any_worker_count(small_set, tmp_path):
    out, _ = small_set
    again = tmp_path / "again"
    generate_dataset(again, seed=3, num_classes=3, tracks_per_class=2, seconds=3.0, workers=2)
    assert _tree_digests(again) == _tree_digests(out)


def test_different_seed_differs(small_set, tmp_path):
    out, _ = small_set
    other = tmp_path / "other"
    generate_dataset(other, seed=4, num_classes=2, tracks_per_class=1, seconds=3.0, workers=1)
    for genre in GENRES[:2]:
        assert _digest(other / genre / f"{genre}_000.wav") != _digest(out / genre / f"{genre}_000.wav")


def test_rerun_with_fewer_tracks_removes_stale_files(tmp_path):
    out = tmp_path / "demo"
    generate_dataset(out, seed=0, num_classes=3, tracks_per_class=2, seconds=1.0, workers=1)
    generate_dataset(out, seed=0, num_classes=2, tracks_per_class=1, seconds=1.0, workers=1)
    wavs = sorted(str(p.relative_to(out)) for p in out.rglob("*.wav"))
    assert wavs == [f"{g}/{g}_000.wav" for g in sorted(GENRES[:2])]
    assert json.loads((out / "synth.json").read_text())["classes"] == list(GENRES[:2])


def test_interrupted_run_can_be_rerun(tmp_path, monkeypatch):
    from musicnas.data.synth import dataset

    real = dataset._write_track
    calls = []

    def flaky(job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    out = tmp_path / "demo"
    monkeypatch.setattr(dataset, "_write_track", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(out, seed=0, num_classes=2, tracks_per_class=2, seconds=1.0, workers=1)
    with pytest.raises(MusicnasError, match="incomplete"):
        load_manifest(out)
    # the provisional manifest names no settings, so nobody can take the folder for a finished demo
    assert "seed" not in json.loads((out / "synth.json").read_text())
    monkeypatch.setattr(dataset, "_write_track", real)
    generate_dataset(out, seed=0, num_classes=2, tracks_per_class=2, seconds=1.0, workers=1)
    assert load_manifest(out)["complete"] is True
    assert len(list(out.rglob("*.wav"))) == 4


def test_refuses_foreign_non_empty_folder(tmp_path):
    (tmp_path / "my_music").mkdir()
    (tmp_path / "my_music" / "song.wav").write_bytes(b"x")
    with pytest.raises(MusicnasError, match="not empty"):
        generate_dataset(tmp_path / "my_music", num_classes=2, tracks_per_class=1, seconds=1.0, workers=1)


@pytest.mark.parametrize("num_classes", [1, len(GENRES) + 1])
def test_class_count_is_checked(tmp_path, num_classes):
    with pytest.raises(MusicnasError, match="between 2 and"):
        generate_dataset(tmp_path / "x", num_classes=num_classes, tracks_per_class=1, seconds=1.0, workers=1)


def test_at_least_eight_named_genres():
    assert len(GENRES) >= 8 and len(set(GENRES)) == len(GENRES)
    assert {"rock", "electronic", "jazz", "classical", "hiphop", "reggae", "metal", "ambient"} <= set(
        GENRES[:8]
    )
    for genre in GENRES_TABLE:  # every instrument a genre names exists
        for part in (genre.bass, genre.comp, genre.lead):
            if part is not None:
                assert set(part.instruments) <= set(INSTRUMENTS), genre.name


@pytest.mark.parametrize("genre", GENRES)
def test_every_genre_renders_clean_music(genre):
    audio = render_track(genre, seconds=2.5, sample_rate=SR, seed=1, track_index=0)
    assert audio.dtype == np.float32 and audio.shape == (int(2.5 * SR),)
    assert np.all(np.isfinite(audio))
    assert np.max(np.abs(audio)) <= 0.98  # headroom: nothing clips when written as 16-bit PCM
    assert np.sqrt(np.mean(audio**2)) > 0.005  # not silent
    # not a pure tone: a sine has one spectral peak, composed music has many
    _, power = signal.welch(audio, SR, nperseg=4096)
    peaks, _ = signal.find_peaks(10 * np.log10(power + 1e-20), prominence=6)
    assert len(peaks) >= 8


def test_render_is_deterministic_per_seed_and_track():
    a = render_track("jazz", seconds=2.0, seed=5, track_index=1)
    assert np.array_equal(a, render_track("jazz", seconds=2.0, seed=5, track_index=1))
    assert not np.allclose(a, render_track("jazz", seconds=2.0, seed=6, track_index=1))
    assert not np.allclose(a, render_track("jazz", seconds=2.0, seed=5, track_index=2))


def test_track_parameters_vary_within_genre_ranges():
    infos = [
        render_track("reggae", seconds=1.0, seed=0, track_index=i, return_info=True)[1] for i in range(6)
    ]
    lo, hi = next(g.bpm for g in GENRES_TABLE if g.name == "reggae")
    bpms = [info["bpm"] for info in infos]
    assert all(lo <= b <= hi for b in bpms)
    assert len({round(b) for b in bpms}) >= 4  # tempo is drawn per track
    assert len({info["key_pc"] for info in infos}) >= 3  # so is the key
    # neighbouring track indices get independent draws (a naive seeding made them near-equal)
    first = [track_rng(0, "rock", i).random() for i in range(8)]
    assert np.std(first) > 0.15


def _onset_envelope(audio: np.ndarray, hop: int = 256) -> np.ndarray:
    _, _, spec = signal.stft(audio, SR, nperseg=1024, noverlap=1024 - hop)
    level = 20 * np.log10(np.abs(spec) / np.abs(spec).max() + 1e-3)
    return np.maximum(np.diff(level, axis=1), 0).mean(axis=0)


def _tempo(envelope: np.ndarray, hop: int = 256, lo: float = 70, hi: float = 140) -> float:
    e = envelope - envelope.mean()
    ac = np.correlate(e, e, "full")[len(e) - 1 :]
    fps = SR / hop
    lags = np.arange(int(fps * 60 / hi), int(fps * 60 / lo) + 1)
    return 60 * fps / lags[np.argmax(ac[lags])]


def test_genres_differ_measurably():
    def stats(genre):
        rows = []
        for i in range(6):
            audio = render_track(genre, seconds=4.0, seed=0, track_index=i)
            env = _onset_envelope(audio)
            freqs, power = signal.welch(audio, SR, nperseg=2048)
            rows.append(
                (np.sqrt(np.mean(audio**2)), env.mean(), _tempo(env), (freqs * power).sum() / power.sum())
            )
        return np.array(rows)

    metal, ambient, electronic, hiphop = (stats(g) for g in ("metal", "ambient", "electronic", "hiphop"))
    assert metal[:, 0].mean() > 1.5 * ambient[:, 0].mean()  # loud vs quiet
    assert metal[:, 1].mean() > 1.5 * ambient[:, 1].mean()  # dense onsets vs sustained pads
    assert metal[:, 3].mean() > 2.0 * electronic[:, 3].mean()  # distorted guitars vs sub-heavy synths
    assert np.median(electronic[:, 2]) > np.median(hiphop[:, 2]) + 15  # measured tempo, ~125 vs ~90 bpm


def test_karplus_strong_pitch_is_exact():
    for freq in (82.41, 196.0, 440.0, 987.77):  # fractional loop delay keeps high notes in tune
        tone = karplus_strong(freq, 1.0, 1.0, SR, np.random.default_rng(0), brightness=0.9, t60=3.0)
        spectrum = np.abs(np.fft.rfft(tone[: SR // 2] * np.hanning(SR // 2), n=8 * SR))
        bins = np.fft.rfftfreq(8 * SR, 1 / SR)
        near = (bins > freq * 0.94) & (bins < freq * 1.06)  # the fundamental, within a semitone
        peak = bins[near][np.argmax(spectrum[near])]
        assert abs(1200 * np.log2(peak / freq)) < 10  # within 10 cents (a whole-sample loop is ~40 off)


def test_unknown_genre_is_a_user_error():
    with pytest.raises(MusicnasError, match="unknown demo genre"):
        render_track("polka", seconds=1.0)
