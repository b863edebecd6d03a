"""Small signal-processing pieces shared by the instruments and the mixer (numpy + scipy.signal)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal


@lru_cache(maxsize=512)
def _butter(kind: str, order: int, cutoff: tuple[float, ...], sr: int) -> np.ndarray:
    wn = cutoff[0] if len(cutoff) == 1 else list(cutoff)
    return signal.butter(order, wn, btype=kind, output="sos", fs=sr)


def _clip_cut(freq: float, sr: int) -> float:
    # Snapped to a 1/12-octave grid so that the filter-design cache is hit (designing a filter costs
    # more than running it on a short note); kept inside (20 Hz, 0.45 * sr).
    freq = min(max(freq, 20.0), 0.45 * sr)
    return float(round(2.0 ** (round(12.0 * np.log2(freq)) / 12.0), 1))


def lowpass(x: np.ndarray, cutoff: float, sr: int, order: int = 2) -> np.ndarray:
    return signal.sosfilt(_butter("lowpass", order, (_clip_cut(cutoff, sr),), sr), x)


def highpass(x: np.ndarray, cutoff: float, sr: int, order: int = 2) -> np.ndarray:
    return signal.sosfilt(_butter("highpass", order, (_clip_cut(cutoff, sr),), sr), x)


def bandpass(x: np.ndarray, low: float, high: float, sr: int, order: int = 2) -> np.ndarray:
    lo, hi = _clip_cut(low, sr), _clip_cut(high, sr)
    if hi <= lo * 1.05:
        hi = min(lo * 1.5, 0.45 * sr)
    return signal.sosfilt(_butter("bandpass", order, (lo, hi), sr), x)


def adsr(
    n: int, sr: int, attack: float, decay: float, sustain: float, release: float, held: float
) -> np.ndarray:
    """Attack/decay/sustain/release envelope of ``n`` samples; the key is released after ``held`` s.

    Built segment by segment (linear attack, exponential decay to the sustain level, exponential
    release from wherever the envelope was at key-off), evaluating each formula only where it applies."""
    env = np.empty(n)
    n_att = min(n, int(attack * sr))
    n_off = min(n, max(int(held * sr), 0))
    if n_att:
        env[:n_att] = np.arange(n_att) / max(n_att, 1)
    if n_att < n:
        t = np.arange(n - n_att) / sr
        if sustain >= 1.0:
            env[n_att:] = 1.0
        else:
            # beyond ~12 time constants the decay has reached the sustain level: skip the exp there
            m = min(n - n_att, int(12 * max(decay, 1e-4) * sr) + 1)
            env[n_att : n_att + m] = sustain + (1.0 - sustain) * np.exp(-t[:m] / max(decay, 1e-4))
            env[n_att + m :] = sustain
    if n_off < n:
        level = env[n_off - 1] if n_off > 0 else 0.0
        env[n_off:] = level * np.exp(-np.arange(n - n_off) / (max(release, 1e-4) * sr))
    return env


def polyblep_saw(phase: np.ndarray, dt: float) -> np.ndarray:
    """Band-limited-ish sawtooth from a phase in cycles (polyBLEP removes most aliasing cheaply)."""
    p = phase - np.floor(phase)
    y = 2.0 * p - 1.0
    lo = p < dt
    x = p[lo] / dt
    y[lo] -= x + x - x * x - 1.0
    hi = p > 1.0 - dt
    x = (p[hi] - 1.0) / dt
    y[hi] -= x * x + x + x + 1.0
    return y


def vibrato_phase(
    freq: float, n: int, sr: int, rate: float = 5.5, depth: float = 0.0, start: float = 0.0
) -> np.ndarray:
    """Phase in cycles of a tone at ``freq`` with sinusoidal vibrato (depth as a frequency ratio)."""
    t = np.arange(n) / sr
    phase = freq * t + start
    if depth > 0:
        # closed-form integral of freq * (1 + depth * sin(2 pi rate t))
        phase += freq * depth / (2 * np.pi * rate) * (1.0 - np.cos(2 * np.pi * rate * t))
    return phase


def place(buffer: np.ndarray, sound: np.ndarray, start: int, gain: float = 1.0) -> None:
    """Adds ``sound`` into ``buffer`` at sample ``start`` (cut at either end)."""
    if start >= buffer.size or start + sound.size <= 0:
        return
    s0 = max(0, -start)
    a = max(0, start)
    b = min(buffer.size, start + sound.size)
    buffer[a:b] += gain * sound[s0 : s0 + (b - a)]


def reverb_ir(
    sr: int, rt60: float, rng: np.random.Generator, predelay: float = 0.01, damping: float = 5000.0
) -> np.ndarray:
    """Impulse response of a room: exponentially decaying noise, darker as it decays."""
    n = int(min(rt60, 3.0) * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    bright = lowpass(noise, damping, sr)
    dark = lowpass(noise, damping / 4, sr)
    mix = np.linspace(0.0, 1.0, n) ** 0.5
    ir = (1 - mix) * bright + mix * dark
    ir = np.concatenate([np.zeros(int(predelay * sr)), ir])
    return ir / np.sqrt(np.sum(ir**2) + 1e-12)


def reverb(x: np.ndarray, ir: np.ndarray, wet: float) -> np.ndarray:
    if wet <= 0:
        return x
    # float32 halves the cost of the longest FFT in a track; the result ends as 16-bit PCM anyway
    tail = signal.fftconvolve(x.astype(np.float32), ir.astype(np.float32))[: x.size]
    return (1 - wet) * x + wet * tail


def tilt(x: np.ndarray, amount: float, sr: int, pivot: float = 1000.0) -> np.ndarray:
    """Spectral tilt: ``amount`` > 0 brightens, < 0 darkens (about +-6 dB per unit at the extremes)."""
    if amount == 0:
        return x
    low = lowpass(x, pivot, sr, order=1)
    high = x - low
    return low * (1 - 0.5 * amount) + high * (1 + 0.5 * amount)


def saturate(x: np.ndarray, drive: float) -> np.ndarray:
    """tanh saturation; small signals keep their level, loud ones are squashed (``drive`` = gain into it)."""
    if drive <= 0:
        return x
    return np.tanh(drive * x) / drive
