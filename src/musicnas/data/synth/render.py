"""Turns one (genre, seed, track index) into audio: draw the track's parameters, compose the parts,
render every note, mix and master."""

from __future__ import annotations

import zlib

import numpy as np

from musicnas.data.synth import compose, dsp
from musicnas.data.synth.drums import make_kit
from musicnas.data.synth.genres import GENRE_BY_NAME, GENRES, Genre, Part
from musicnas.data.synth.instruments import INSTRUMENTS, render_note
from musicnas.data.synth.theory import MODES
from musicnas.runtime import MusicnasError

# relative level of each drum piece in the kit (dB), before per-track jitter
DRUM_PIECE_DB = {
    "kick": 0.0,
    "snare": -2.0,
    "clap": -3.0,
    "hat": -12.0,
    "open_hat": -12.0,
    "ride": -12.0,
    "crash": -10.0,
    "rim": -6.0,
    "tom_hi": -4.0,
    "tom_lo": -4.0,
    "shaker": -12.0,
    "brush": -8.0,
}
TAIL_SECONDS = 2.0  # rendered past the end so ringing notes and reverb tails are natural, then cut


def track_rng(seed: int, genre: str, track_index: int) -> np.random.Generator:
    """The generator for one track, from (seed, class, track): independent of worker count and order.

    Uses SeedSequence's spawn keys (its mechanism for independent child streams) keyed by a checksum of
    the genre name. Plain entropy lists such as ``[seed, class, track]`` gave visibly correlated first
    draws for neighbouring track indices (e.g. near-equal tempi), so they are not used."""
    if genre not in GENRE_BY_NAME:
        raise MusicnasError(f"unknown demo genre {genre!r}; choose one of {', '.join(GENRES)}")
    key = (zlib.crc32(genre.encode("utf-8")), int(track_index))
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed) % 2**63, spawn_key=key))


def _db(db: float) -> float:
    return 10.0 ** (db / 20.0)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)) + 1e-12)


def _perturb(instrument: str, rng: np.random.Generator) -> dict:
    """Per-track timbre variation around an instrument's preset (brightness, decay, filter, FM index)."""
    fn, params = INSTRUMENTS[instrument]
    name = fn.__name__
    if name == "karplus_strong":
        return {
            "brightness": float(np.clip(params.get("brightness", 0.5) * rng.uniform(0.7, 1.3), 0.05, 0.95)),
            "t60": params.get("t60", 2.0) * rng.uniform(0.7, 1.4),
        }
    if name == "subtractive":
        return {"cutoff": params.get("cutoff", 1200) * rng.uniform(0.6, 1.7)}
    if name in ("fm_keys", "bell"):
        return {"index": params.get("index", 2.0) * rng.uniform(0.6, 1.5)}
    if name == "piano":
        return {"t60": rng.uniform(1.2, 2.5)}
    return {}


def _render_part(notes, instrument, sr, n, rng, overrides, transpose=0) -> np.ndarray:
    """Renders and places every note. Notes that repeat (same pitch, length to 1/100 s and velocity to
    1/8) reuse one rendering scaled to their velocity, as a sampler would: parts are repetitive, so
    this makes a track several times cheaper."""
    buf = np.zeros(n)
    cache: dict[tuple, np.ndarray] = {}
    for note in notes:
        start = int(note.time * sr)
        if start >= n:
            continue
        vel_q = max(round(note.vel * 8) / 8, 0.125)
        key = (note.midi, round(note.dur, 2), vel_q)
        sound = cache.get(key)
        if sound is None:
            sound = render_note(instrument, note.midi + transpose, key[1], vel_q, sr, rng, **overrides)
            cache[key] = sound
        dsp.place(buf, sound, start, note.vel / vel_q)
    return buf


def _apply_fx(x: np.ndarray, fx: dict, rng, sr: int) -> np.ndarray:
    if "drive" in fx:
        x = dsp.saturate(x / (np.max(np.abs(x)) + 1e-9), rng.uniform(*fx["drive"]))
    if "cutoff" in fx:
        x = dsp.lowpass(x, rng.uniform(*fx["cutoff"]), sr, order=4)
    return x


def _dynamics(n: int, shape: str, rng) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    if shape == "crescendo":  # rises or falls over the excerpt, with a phrase-level swell
        start, end = rng.uniform(0.3, 1.0, 2)
        return (start + (end - start) * t) * (
            1 + 0.25 * np.sin(2 * np.pi * (t * rng.uniform(1, 3) + rng.random()))
        )
    if shape == "swell":
        return 0.6 + 0.4 * np.sin(2 * np.pi * (t * rng.uniform(0.5, 1.5) + rng.random())) ** 2
    return np.ones(n)


def render_track(
    genre: str,
    seconds: float = 15.0,
    sample_rate: int = 22050,
    seed: int = 0,
    track_index: int = 0,
    return_info: bool = False,
):
    """Composes and renders one track of ``genre``: mono float32 in [-1, 1], ``seconds * sample_rate``
    samples. The same (genre, seed, track_index) always gives the same audio. With ``return_info``,
    also returns the track's drawn parameters (tempo, key, mode, instruments)."""
    if genre not in GENRE_BY_NAME:
        raise MusicnasError(f"unknown demo genre {genre!r}; choose one of {', '.join(GENRES)}")
    if seconds <= 0:
        raise MusicnasError(f"track length must be positive, got {seconds} s")
    g: Genre = GENRE_BY_NAME[genre]
    rng = track_rng(seed, genre, track_index)
    sr = int(sample_rate)
    n_out = int(round(seconds * sr))
    n = n_out + int(TAIL_SECONDS * sr)

    beats = int(rng.choice(g.beats_per_bar))
    bpm = float(rng.uniform(*g.bpm))
    swing = float(rng.uniform(*g.swing))
    mode_name = str(rng.choice(g.modes))
    key_pc = int(rng.integers(12))
    progression = g.progressions[int(rng.integers(len(g.progressions)))]
    chord_steps = int(rng.choice(g.chord_steps)) * beats // 4
    chord_size = int(rng.choice(g.chord_size))
    song = compose.make_song(
        rng, bpm, beats, swing, MODES[mode_name], key_pc, seconds + 1.0, progression, chord_steps, chord_size
    )
    info = {
        "genre": genre,
        "bpm": round(bpm, 2),
        "beats_per_bar": beats,
        "swing": round(swing, 3),
        "mode": mode_name,
        "key_pc": key_pc,
        "progression": list(progression),
        "parts": {},
    }

    mix = np.zeros(n)
    if g.drums and rng.random() < g.drum_presence:
        kit = make_kit(sr, rng, g.kit)
        hits = compose.drum_hits(
            song, rng, list(g.drums), g.fill_prob, g.humanize, density=rng.uniform(0.7, 1.0)
        )
        gains = {p: _db(DRUM_PIECE_DB[p] + rng.uniform(-3, 3)) for p in kit}
        bus = np.zeros(n)
        for piece, t, vel in hits:
            if piece in kit:
                variants = kit[piece]
                dsp.place(bus, variants[int(rng.integers(len(variants)))], int(t * sr), gains[piece] * vel)
        level = rng.uniform(*g.drum_level_db)
        bus = bus / _rms(bus[:n_out]) * _db(level)
        if rng.random() < g.breakdown_prob:  # drums drop out for a few bars (intro, breakdown)
            bars = int(rng.integers(2, 5))
            first = int(rng.integers(0, max(1, int(seconds / song.grid.bar) - 1)))
            a, b = int(first * song.grid.bar * sr), int((first + bars) * song.grid.bar * sr)
            gate = np.ones(n)
            gate[a:b] = 0.0
            bus *= dsp.lowpass(gate, 20.0, sr, order=1)  # smooth the gate edges
            info["parts"]["drums"] = {"breakdown_bars": [first, first + bars]}
        mix += bus
        info["parts"].setdefault("drums", {})["level_db"] = round(level, 2)

    for role in ("bass", "comp", "lead"):
        part: Part | None = getattr(g, role)
        if part is None or rng.random() >= part.presence:
            continue
        instrument = str(rng.choice(part.instruments))
        style = part.style if isinstance(part.style, str) else str(rng.choice(part.style))
        if style == "melody":
            notes = compose.melody(song, rng, **part.args)
        elif role == "bass":
            notes = compose.bass_line(song, rng, style)
        else:
            notes = compose.comping(song, rng, style, **part.args)
        if not notes:
            continue
        # bass lines are written in bass register; a pad/string "bass" plays an octave up to stay audible
        transpose = 12 if role == "bass" and instrument in ("pad", "strings", "piano") else 0
        x = _render_part(notes, instrument, sr, n, rng, _perturb(instrument, rng), transpose)
        x = _apply_fx(x, part.fx, rng, sr)
        level = rng.uniform(*part.level_db)
        mix += x / _rms(x[:n_out]) * _db(level)
        info["parts"][role] = {"style": style, "instrument": instrument, "level_db": round(level, 2)}

    # master: production EQ, saturation, room, dynamics, loudness, noise floor, peak safety, fades.
    # The EQ is drawn from one distribution shared by all genres (recordings of any genre differ in
    # bandwidth and tone), which blurs the per-genre average spectrum a statistics classifier leans on.
    mix = dsp.tilt(mix, rng.uniform(-1.0, 1.0), sr)
    if rng.random() < 0.6:
        mix = dsp.lowpass(mix, rng.uniform(3000, 10000), sr, order=2)
    if rng.random() < 0.5:
        mix = dsp.highpass(mix, rng.uniform(40, 250), sr, order=2)
    drive = rng.uniform(*g.drive)
    if drive > 0:
        mix = dsp.saturate(mix / (np.max(np.abs(mix)) + 1e-9), drive)
    ir = dsp.reverb_ir(sr, rng.uniform(*g.rt60), rng, predelay=rng.uniform(0.005, 0.03))
    mix = dsp.reverb(mix, ir, rng.uniform(*g.reverb_wet))
    mix = mix[:n_out] * _dynamics(n_out, g.dynamics, rng)
    loudness = rng.uniform(*g.loudness_db) + rng.normal(0.0, 4.0)
    mix *= _db(loudness) / _rms(mix)
    noise_db = rng.uniform(-72, -34)
    noise = dsp.lowpass(rng.standard_normal(n_out), rng.uniform(3000, 10000), sr, order=1)
    mix += noise * _db(noise_db) / _rms(noise)
    peak = np.max(np.abs(mix))
    if peak > 0.97:  # a limiter, not a clipper: scale the whole track
        mix *= 0.97 / peak
    fade = min(n_out // 4, int(0.02 * sr))
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade)
        mix[:fade] *= ramp
        mix[-fade:] *= ramp[::-1]
    info.update(loudness_db=round(loudness, 2), noise_db=round(noise_db, 2), drive=round(drive, 3))
    audio = mix.astype(np.float32)
    return (audio, info) if return_info else audio
