"""Decoding, downmixing, resampling, streaming and clip cutting; the reasons bad files are refused."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.data.audio import AudioSkip, iter_audio_blocks, iter_clips, load_audio
from musicnas.data.splits import clip_offsets


def tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(wave: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spectrum) * sr / wave.size)


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "sr"),
    [
        (".wav", "WAV", "PCM_16", 44100),
        (".flac", "FLAC", "PCM_16", 22050),
        (".ogg", "OGG", "VORBIS", 44100),
        (".opus", "OGG", "OPUS", 48000),
        (".mp3", "MP3", "MPEG_LAYER_III", 44100),
        (".au", "AU", "PCM_16", 22050),  # the original GTZAN release
    ],
)
def test_formats_decode_downmix_and_resample(tmp_path, suffix, fmt, subtype, sr):
    # stereo: 440 Hz left, 880 Hz right -> mono holds both at half amplitude
    stereo = np.stack([tone(440, 2.0, sr), tone(880, 2.0, sr)], axis=1)
    path = tmp_path / f"a{suffix}"
    sf.write(path, stereo, sr, format=fmt, subtype=subtype)
    mono = load_audio(path, 16000)
    assert mono.dtype == np.float32 and mono.ndim == 1
    # lossy codecs add or trim a few ms of priming/padding
    assert abs(mono.size - 32000) < 0.05 * 32000
    body = mono[2000:-2000]
    spectrum = np.abs(np.fft.rfft(body * np.hanning(body.size)))
    freqs = np.fft.rfftfreq(body.size, 1 / 16000)
    peaks = sorted(freqs[np.argsort(spectrum)[-40:]])
    assert any(abs(f - 440) < 5 for f in peaks) and any(abs(f - 880) < 5 for f in peaks)
    assert 0.1 < np.abs(body).max() < 0.75  # averaged, not summed


def test_resampling_is_band_limited(tmp_path):
    """A 7 kHz tone survives 44.1k -> 16k; a 10 kHz tone (above the new Nyquist) must not alias to 6 kHz."""
    sr = 44100
    sf.write(tmp_path / "in.wav", tone(7000, 1.0, sr) + tone(10000, 1.0, sr), sr, subtype="FLOAT")
    out = load_audio(tmp_path / "in.wav", 16000)
    spectrum = np.abs(np.fft.rfft(out[1000:-1000]))
    freqs = np.fft.rfftfreq(out[1000:-1000].size, 1 / 16000)
    at = lambda f: spectrum[np.abs(freqs - f) < 20].max()  # noqa: E731
    assert abs(dominant_hz(out[1000:-1000], 16000) - 7000) < 10
    assert at(6000) < 1e-3 * at(7000)


@settings(max_examples=8, deadline=None)
@given(
    src_rate=st.sampled_from([16000, 22050, 44100, 48000]),
    block_seconds=st.floats(0.05, 1.5),
    seconds=st.floats(0.3, 3.0),
)
def test_streamed_blocks_equal_whole_file(tmp_path_factory, src_rate, block_seconds, seconds):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("stream") / "x.wav"
    sf.write(
        path,
        (0.2 * rng.standard_normal((int(seconds * src_rate), 2))).astype(np.float32),
        src_rate,
        subtype="FLOAT",
    )
    whole = load_audio(path, 16000)
    blocks = list(iter_audio_blocks(path, 16000, block_seconds))
    streamed = np.concatenate(blocks)
    assert streamed.size == whole.size
    np.testing.assert_allclose(streamed, whole, atol=2e-5)
    if seconds > 2 * block_seconds + 0.1:
        assert len(blocks) >= 2  # really streamed


@settings(max_examples=30, deadline=None)
@given(
    seconds=st.floats(0.2, 7.0),
    clip=st.sampled_from([1.0, 1.5, 3.0]),
    hop=st.sampled_from([0.5, 1.0, 3.0, 4.0]),
    min_seconds=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_clip_cutting_rule(tmp_path_factory, seconds, clip, hop, min_seconds):
    sr = 8000
    n = int(seconds * sr)
    wave = (0.1 + 0.8 * np.arange(n) / max(n, 1)).astype(np.float32)  # ramp: offsets are checkable
    path = tmp_path_factory.mktemp("clips") / "r.wav"
    sf.write(path, wave, sr, subtype="FLOAT")
    cs, hs, ms = int(clip * sr), int(hop * sr), int(min(min_seconds, clip) * sr)
    expected = clip_offsets(n, cs, hs, ms)
    if not expected:
        with pytest.raises(AudioSkip, match="too short"):
            list(iter_clips(path, cs, hs, ms, sr))
        return
    got = list(iter_clips(path, cs, hs, ms, sr))
    assert [o for o, _ in got] == expected
    for offset, c in got:
        assert c.shape == (cs,)
        real = min(cs, n - offset)
        np.testing.assert_allclose(c[:real], wave[offset : offset + real], atol=1e-6)
        assert np.all(c[real:] == 0)  # padding only for a file shorter than a clip


def write_bad_files(folder):
    """One of each kind of unusable file; returns {name: expected reason fragment}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = tone(440, 3.0, 16000)
    sf.write(folder / "good.wav", good, 16000)
    whole = (folder / "good.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(whole[: len(whole) // 2])
    (folder / "zero.wav").write_bytes(b"")
    (folder / "text.wav").write_text("this is a text file, not audio\n" * 10)
    sf.write(folder / "silent.wav", np.zeros(32000, np.float32), 16000)
    sf.write(folder / "short.wav", tone(440, 0.4, 16000), 16000)
    (folder / "header_only.wav").write_bytes(whole[:44])
    sf.write(folder / "good.flac", good, 16000)
    flac = (folder / "good.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    (folder / "good.flac").unlink()
    return {
        "truncated.wav": "truncated",
        "zero.wav": "empty",
        "text.wav": "not audio: the file holds text",
        "silent.wav": "silent",
        "short.wav": "too short",
        "header_only.wav": "empty",
        "truncated.flac": "truncated or corrupt",
    }


def test_streaming_wav_header_is_not_truncation(tmp_path):
    """Writers that stream to a pipe leave 0xFFFFFFFF as the data length; such a file is whole."""
    sf.write(tmp_path / "s.wav", tone(440, 2.0, 16000), 16000)
    raw = bytearray((tmp_path / "s.wav").read_bytes())
    at = raw.find(b"data")
    raw[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    (tmp_path / "s.wav").write_bytes(bytes(raw))
    assert load_audio(tmp_path / "s.wav", 16000).size == 32000


def test_bad_files_give_specific_reasons(tmp_path):
    expected = write_bad_files(tmp_path)
    for name, fragment in expected.items():
        with pytest.raises(AudioSkip, match=fragment):
            list(iter_clips(tmp_path / name, 16000, 16000, 16000, 16000))
    assert len(list(iter_clips(tmp_path / "good.wav", 16000, 16000, 16000, 16000))) == 3


@settings(max_examples=20, deadline=None)
@given(seconds=st.floats(0.1, 7.0), hop=st.sampled_from([1.0, 2.0, 3.0, 4.5]))
def test_waveform_and_streamed_file_clips_agree(tmp_path_factory, seconds, hop):
    """Prediction cuts an in-memory waveform or streams a file; both must give prepare's clips."""
    from musicnas.data.extract import clips_from_waveform, iter_file_clips
    from musicnas.data.features import FeatureConfig

    config = FeatureConfig(sample_rate=8000, clip_hop_seconds=hop, n_fft=256, hop_length=128, n_mels=16)
    wave = (0.3 * np.sin(np.arange(int(seconds * 8000)) / 5)).astype(np.float32)
    path = tmp_path_factory.mktemp("pred") / "p.wav"
    sf.write(path, wave, 8000, subtype="FLOAT")
    offsets, clips = clips_from_waveform(wave, config)
    if not offsets:
        assert seconds * 8000 < config.min_samples + 1
        with pytest.raises(AudioSkip, match="too short"):
            list(iter_file_clips(str(path), config))
        return
    streamed = list(iter_file_clips(str(path), config))
    assert [o for o, _ in streamed] == [o / 8000 for o in offsets]
    np.testing.assert_allclose(np.stack([c for _, c in streamed]), clips, atol=1e-6)
