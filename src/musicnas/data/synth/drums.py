"""Drum one-shots synthesised per track (so each song has its own kit) and placed by pattern."""

from __future__ import annotations

import numpy as np

from musicnas.data.synth.dsp import bandpass, highpass, lowpass

TWO_PI = 2.0 * np.pi


def _t(seconds: float, sr: int) -> np.ndarray:
    return np.arange(int(seconds * sr)) / sr


def kick(sr, rng, pitch=50.0, sweep=120.0, sweep_time=0.035, decay=0.25, click=0.4):
    """Sine whose pitch falls quickly from ``pitch + sweep`` to ``pitch``, plus a noise click."""
    t = _t(decay * 3, sr)
    f = pitch + sweep * np.exp(-t / sweep_time)
    y = np.sin(TWO_PI * np.cumsum(f) / sr) * np.exp(-t / decay)
    k = int(0.004 * sr)
    y[:k] += click * highpass(rng.standard_normal(k), 1500, sr) * np.linspace(1, 0, k)
    return y


def snare(sr, rng, tone=190.0, tone_mix=0.5, noise_decay=0.12, brightness=6000.0):
    t = _t(noise_decay * 4, sr)
    body = (np.sin(TWO_PI * tone * t) + 0.5 * np.sin(TWO_PI * tone * 1.62 * t)) * np.exp(-t / 0.05)
    noise = bandpass(rng.standard_normal(t.size), 900, brightness, sr) * np.exp(-t / noise_decay)
    return tone_mix * body + (1 - tone_mix) * 2.0 * noise


def clap(sr, rng, center=1200.0, decay=0.12):
    t = _t(decay * 4, sr)
    env = np.exp(-t / decay)
    for offset in (0.0, 0.011, 0.022):  # several hands, slightly apart
        env = np.maximum(env, np.where(t >= offset, np.exp(-(t - offset) / 0.006), 0.0))
    return 2.0 * bandpass(rng.standard_normal(t.size), center * 0.7, center * 2.2, sr) * env


def _metal(sr, rng, n, base=300.0):
    """Six inharmonic square waves (the classic analogue cymbal source)."""
    t = np.arange(n) / sr
    ratios = np.array([1.0, 1.4471, 1.6170, 1.9265, 2.5028, 2.6637]) * base * rng.uniform(0.95, 1.05)
    # square waves from the fractional phase: far cheaper than sign(sin(...))
    return sum(np.where((r * t + rng.random()) % 1.0 < 0.5, 1.0, -1.0) for r in ratios) / 6.0


def hat(sr, rng, decay=0.04, cutoff=7000.0, metal=0.4):
    t = _t(max(decay * 5, 0.03), sr)
    src = (1 - metal) * rng.standard_normal(t.size) + metal * _metal(sr, rng, t.size)
    return highpass(src, cutoff, sr) * np.exp(-t / decay)


def ride(sr, rng, decay=0.9, cutoff=3500.0):
    t = _t(decay * 2.5, sr)
    src = 0.5 * rng.standard_normal(t.size) + _metal(sr, rng, t.size, base=420.0)
    ping = np.sin(TWO_PI * 2600 * rng.uniform(0.9, 1.1) * t) * np.exp(-t / 0.15)
    return (bandpass(src, cutoff, 0.44 * sr, sr) + 0.3 * ping) * np.exp(-t / decay) * 0.7


def crash(sr, rng, decay=1.2):
    t = _t(decay * 2.5, sr)
    src = rng.standard_normal(t.size) + 0.6 * _metal(sr, rng, t.size, base=500.0)
    return highpass(src, 3000, sr) * np.exp(-t / decay) * 0.6


def rim(sr, rng, tone=1700.0):
    t = _t(0.08, sr)
    y = np.sin(TWO_PI * tone * t) * np.exp(-t / 0.012)
    y += 0.5 * bandpass(rng.standard_normal(t.size), 2000, 6000, sr) * np.exp(-t / 0.005)
    return y


def tom(sr, rng, pitch=120.0):
    t = _t(0.6, sr)
    f = pitch * (1 + 0.5 * np.exp(-t / 0.02))
    y = np.sin(TWO_PI * np.cumsum(f) / sr) * np.exp(-t / 0.18)
    y += 0.2 * lowpass(rng.standard_normal(t.size), 3000, sr) * np.exp(-t / 0.03)
    return y


def shaker(sr, rng, decay=0.05):
    t = _t(0.15, sr)
    env = np.minimum(t / 0.015, 1.0) * np.exp(-np.maximum(t - 0.015, 0) / decay)
    return 1.5 * bandpass(rng.standard_normal(t.size), 5000, 10000, sr) * env


def brush(sr, rng, decay=0.12):
    t = _t(0.35, sr)
    env = np.minimum(t / 0.03, 1.0) * np.exp(-np.maximum(t - 0.03, 0) / decay)
    return 1.2 * bandpass(rng.standard_normal(t.size), 2500, 9000, sr) * env


def make_kit(sr: int, rng: np.random.Generator, style: dict) -> dict[str, list[np.ndarray]]:
    """One kit per track: each piece drawn around the genre's settings, with two variants per piece
    so repeated hits are not identical."""

    def u(lo, hi):
        return float(rng.uniform(lo, hi))

    kp = style.get("kick", {})
    sp = style.get("snare", {})
    hp = style.get("hat", {})
    pieces = {
        "kick": lambda: kick(
            sr,
            rng,
            pitch=u(*kp.get("pitch", (45, 60))),
            sweep=u(*kp.get("sweep", (80, 160))),
            decay=u(*kp.get("decay", (0.15, 0.35))),
            click=u(*kp.get("click", (0.2, 0.6))),
        ),
        "snare": lambda: snare(
            sr,
            rng,
            tone=u(170, 240),
            tone_mix=u(*sp.get("tone_mix", (0.3, 0.6))),
            noise_decay=u(*sp.get("decay", (0.08, 0.18))),
            brightness=u(5000, 9000),
        ),
        "clap": lambda: clap(sr, rng, center=u(900, 1600), decay=u(0.08, 0.2)),
        "hat": lambda: hat(
            sr, rng, decay=u(*hp.get("decay", (0.025, 0.06))), cutoff=u(6000, 8500), metal=u(0.2, 0.7)
        ),
        "open_hat": lambda: hat(sr, rng, decay=u(0.18, 0.35), cutoff=u(6000, 8000), metal=u(0.3, 0.7)),
        "ride": lambda: ride(sr, rng, decay=u(0.6, 1.2)),
        "crash": lambda: crash(sr, rng, decay=u(0.9, 1.6)),
        "rim": lambda: rim(sr, rng, tone=u(1400, 2100)),
        "tom_hi": lambda: tom(sr, rng, pitch=u(170, 220)),
        "tom_lo": lambda: tom(sr, rng, pitch=u(90, 130)),
        "shaker": lambda: shaker(sr, rng, decay=u(0.03, 0.08)),
        "brush": lambda: brush(sr, rng, decay=u(0.08, 0.18)),
    }
    needed = set(style.get("pieces", pieces))
    kit = {}
    for name, make in pieces.items():
        if name in needed:
            variants = [make() for _ in range(2)]
            kit[name] = [v / (np.max(np.abs(v)) + 1e-9) for v in variants]
    return kit
