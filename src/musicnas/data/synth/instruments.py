"""Note renderers: plucked strings (Karplus-Strong), FM keys and bells, additive organ and piano,
subtractive saw/square synths with a filter, flute, 808 sub bass.

Every renderer has the signature ``render(freq, dur, vel, sr, rng, **params) -> np.ndarray``: ``dur`` is
how long the note is held (seconds); the returned sound may ring on past it. Sounds are float64 and
peak around ``vel`` (0..1).
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from musicnas.data.synth.dsp import adsr, lowpass, polyblep_saw, vibrato_phase

TWO_PI = 2.0 * np.pi


def karplus_strong(freq, dur, vel, sr, rng, brightness=0.6, t60=2.0, release=0.06, tail=0.25, pick=0.2):
    """Plucked string. The delay-line recurrence y[n] = g (a y[n-P] + b y[n-P-1] + c y[n-P-2]) only looks
    one period back, so a whole period is computed per numpy step (no per-sample Python loop). The
    3-tap loss filter is the classic two-point average combined with a linear-interpolation fractional
    delay, so the loop length (P + 0.5 + w) matches the pitch exactly."""
    period = sr / freq
    p = max(int(np.floor(period - 0.5)), 2)
    w = min(max(period - 0.5 - p, 0.0), 1.0)
    g = 10.0 ** (-3.0 / (max(t60, 0.05) * freq))  # per-period loss for the requested decay time
    a, b, c = g * 0.5 * (1 - w), g * 0.5, g * 0.5 * w
    n = int((dur + tail) * sr)
    blocks = n // p + 2
    y = np.zeros(2 + blocks * p)
    # excitation: noise, low-passed for a darker pluck, with a pick-position comb notch
    exc = rng.uniform(-1.0, 1.0, p)
    pole = 0.95 * (1.0 - brightness)
    exc = signal.lfilter([1.0 - pole], [1.0, -pole], exc)
    shift = max(1, int(pick * p))
    exc = exc - np.roll(exc, shift)
    exc -= exc.mean()
    y[2 : 2 + p] = exc / (np.max(np.abs(exc)) + 1e-9)
    for k in range(1, blocks):
        s = 2 + k * p
        y[s : s + p] = a * y[s - p : s] + b * y[s - p - 1 : s - 1] + c * y[s - p - 2 : s - 2]
    out = y[2 : 2 + n]
    held = int(dur * sr)
    if held < n:  # finger damps the string after the note
        out[held:] *= np.exp(-np.arange(n - held) / (release * sr))
    return vel * out


def fm_keys(
    freq,
    dur,
    vel,
    sr,
    rng,
    ratio=1.0,
    index=1.8,
    index_decay=2.5,
    amp_decay=1.2,
    tine=0.25,
    tail=0.4,
    release=0.08,
):
    """Two-operator FM: electric piano (ratio 1 with a high 'tine' partial) or bells (inharmonic ratio)."""
    n = int((dur + tail) * sr)
    t = np.arange(n) / sr
    idx = index * (0.5 + vel) * np.exp(-t * index_decay)
    y = np.sin(TWO_PI * freq * t + idx * np.sin(TWO_PI * freq * ratio * t))
    if tine > 0:
        m = min(n, int(0.2 * sr))  # the tine partial is gone (-70 dB) after 0.2 s
        y[:m] += tine * np.sin(TWO_PI * freq * 14.0 * t[:m]) * np.exp(-t[:m] * 40.0)
    env = np.exp(-t * amp_decay) * adsr(n, sr, 0.002, 1.0, 1.0, release, dur)
    return vel * y * env


def bell(freq, dur, vel, sr, rng, **kw):
    kw.setdefault("ratio", 3.5)
    kw.setdefault("index", 2.5)
    kw.setdefault("index_decay", 1.5)
    kw.setdefault("amp_decay", 0.9)
    kw.setdefault("tine", 0.0)
    kw.setdefault("tail", 1.2)
    kw.setdefault("release", 0.6)
    return fm_keys(freq, dur, vel, sr, rng, **kw)


ORGAN_DRAWBARS = ((0.5, 0.6), (1.0, 1.0), (2.0, 0.7), (3.0, 0.45), (4.0, 0.35), (6.0, 0.2), (8.0, 0.15))


def organ(freq, dur, vel, sr, rng, drawbars=ORGAN_DRAWBARS, vibrato=0.004, rate=6.5, tail=0.05, click=0.3):
    """Additive tonewheel organ with scanner vibrato; no velocity dynamics, a key click at the start."""
    n = int((dur + tail) * sr)
    phase = TWO_PI * vibrato_phase(freq, n, sr, rate, vibrato, rng.random())
    y = np.zeros(n)
    for harmonic, level in drawbars:
        if freq * harmonic < 0.45 * sr:
            y += level * np.sin(harmonic * phase)
    y *= adsr(n, sr, 0.005, 0.05, 1.0, 0.03, dur)
    if click > 0:
        k = min(n, int(0.004 * sr))
        y[:k] += click * rng.standard_normal(k) * np.linspace(1, 0, k)
    return 0.35 * (0.6 + 0.4 * vel) * y


def piano(
    freq, dur, vel, sr, rng, partials=8, inharmonicity=0.0004, t60=1.8, tail=0.3, release=0.12, hammer=0.15
):
    """Additive piano-like tone: slightly stretched partials, upper ones decaying faster, hammer thump."""
    base_decay = 6.9 / t60 * (1.0 + freq / 800.0)
    # a struck string is silent (-60 dB) after 6.9 / decay seconds however long the key is held
    n = int(min(dur + tail, 6.9 / base_decay + tail) * sr)
    t = np.arange(n) / sr
    y = np.zeros(n)
    for k in range(1, partials + 1):
        fk = k * freq * np.sqrt(1.0 + inharmonicity * k * k)
        if fk > 0.45 * sr:
            break
        amp = (0.5 + 0.5 * vel) ** (k / 2) / k
        rate = base_decay * (1 + 0.35 * (k - 1))
        m = min(n, int(6.9 / rate * sr))  # upper partials die sooner: compute them only while audible
        y[:m] += amp * np.sin(TWO_PI * fk * t[:m]) * np.exp(-t[:m] * rate)
    y *= adsr(n, sr, 0.002, 1.0, 1.0, release, dur)
    if hammer > 0:
        k = min(n, int(0.01 * sr))
        y[:k] += hammer * vel * lowpass(rng.standard_normal(k), 2500, sr) * np.linspace(1, 0, k)
    return vel * y


def subtractive(
    freq,
    dur,
    vel,
    sr,
    rng,
    wave="saw",
    voices=1,
    detune=0.006,
    cutoff=1200.0,
    env_amount=4.0,
    attack=0.005,
    decay=0.25,
    sustain=0.7,
    release=0.1,
    filter_decay=0.2,
    vibrato=0.0,
    tail=None,
):
    """Saw/square oscillators through a low-pass whose cutoff follows an envelope.

    A time-varying filter per sample would need a Python loop; instead the note is filtered at a bright
    and a dark cutoff and the two are cross-faded by the filter envelope, which sounds much the same."""
    tail = release * 4 if tail is None else tail
    n = int((dur + tail) * sr)
    y = np.zeros(n)
    base = vibrato_phase(1.0, n, sr, 5.0, vibrato)  # shared by the voices, scaled per voice
    for v in range(voices):
        d = 1.0 + detune * (v - (voices - 1) / 2) if voices > 1 else 1.0
        f = freq * d
        phase = f * base + rng.random()
        saw = polyblep_saw(phase, f / sr)
        if wave == "square":
            saw = saw - polyblep_saw(phase + 0.5, f / sr)
        y += saw
    y /= voices
    dark = lowpass(y, cutoff, sr)
    if env_amount > 0:
        bright = lowpass(y, cutoff * (1 + env_amount * vel), sr)
        fenv = np.exp(-np.arange(n) / (filter_decay * sr))
        y = dark + (bright - dark) * fenv
    else:
        y = dark
    return vel * y * adsr(n, sr, attack, decay, sustain, release, dur)


def flute(freq, dur, vel, sr, rng, vibrato=0.006, breath=0.12, tail=0.15):
    """Near-sinusoidal tone with a few harmonics, delayed vibrato and breath noise."""
    n = int((dur + tail) * sr)
    phase = TWO_PI * vibrato_phase(freq, n, sr, 5.0, vibrato, rng.random())
    y = np.sin(phase) + 0.25 * np.sin(2 * phase) + 0.08 * np.sin(3 * phase)
    if breath > 0:
        y += breath * lowpass(rng.standard_normal(n), min(freq * 4, 8000), sr)
    return vel * 0.6 * y * adsr(n, sr, 0.06, 0.2, 0.85, 0.08, dur)


def sub808(freq, dur, vel, sr, rng, glide=0.04, drive=1.5, tail=0.2):
    """Sine sub bass with a short downward pitch glide and a little saturation (hip-hop '808')."""
    n = int((dur + tail) * sr)
    t = np.arange(n) / sr
    f = freq * (1.0 + 1.0 * np.exp(-t / glide))
    phase = TWO_PI * np.cumsum(f) / sr
    y = np.tanh(drive * np.sin(phase)) / np.tanh(drive)
    return vel * y * adsr(n, sr, 0.003, 0.8, 0.6, 0.08, dur)


# name -> (renderer, fixed parameters). Genres pick from these names; per-track randomness
# perturbs the parameters (see genres.py).
INSTRUMENTS = {
    "nylon_guitar": (karplus_strong, dict(brightness=0.45, t60=1.6)),
    "steel_guitar": (karplus_strong, dict(brightness=0.8, t60=2.5, pick=0.12)),
    "electric_guitar": (karplus_strong, dict(brightness=0.7, t60=3.0)),
    "muted_guitar": (karplus_strong, dict(brightness=0.4, t60=0.25, release=0.02)),
    "harp": (karplus_strong, dict(brightness=0.35, t60=3.0, tail=1.0, pick=0.5)),
    "upright_bass": (karplus_strong, dict(brightness=0.15, t60=1.2, pick=0.3)),
    "pick_bass": (karplus_strong, dict(brightness=0.55, t60=2.0, pick=0.1)),
    "epiano": (fm_keys, dict()),
    "bell": (bell, dict()),
    "glock": (bell, dict(ratio=5.0, index=1.2, amp_decay=2.0, tail=0.8)),
    "organ": (organ, dict()),
    "piano": (piano, dict()),
    "strings": (
        subtractive,
        dict(
            voices=3,
            detune=0.008,
            cutoff=1800,
            env_amount=0.0,
            attack=0.25,
            decay=0.5,
            sustain=0.9,
            release=0.4,
            vibrato=0.004,
        ),
    ),
    "pad": (
        subtractive,
        dict(
            voices=3,
            detune=0.012,
            cutoff=900,
            env_amount=0.0,
            attack=0.8,
            decay=1.0,
            sustain=0.9,
            release=1.2,
        ),
    ),
    "brass": (
        subtractive,
        dict(
            voices=2,
            detune=0.004,
            cutoff=700,
            env_amount=3.0,
            attack=0.05,
            filter_decay=0.3,
            sustain=0.8,
            release=0.15,
        ),
    ),
    "saw_lead": (subtractive, dict(voices=2, detune=0.007, cutoff=1500, env_amount=3.0, vibrato=0.003)),
    "square_lead": (subtractive, dict(wave="square", cutoff=2000, env_amount=2.0, vibrato=0.004)),
    "saw_bass": (subtractive, dict(cutoff=300, env_amount=6.0, filter_decay=0.12, sustain=0.8, release=0.05)),
    "square_bass": (
        subtractive,
        dict(wave="square", cutoff=400, env_amount=3.0, filter_decay=0.15, release=0.05),
    ),
    "synth_stab": (
        subtractive,
        dict(voices=2, cutoff=1200, env_amount=4.0, decay=0.15, sustain=0.3, release=0.08),
    ),
    "flute": (flute, dict()),
    "sub808": (sub808, dict()),
}


def render_note(
    instrument: str, midi: float, dur: float, vel: float, sr: int, rng: np.random.Generator, **overrides
):
    fn, params = INSTRUMENTS[instrument]
    freq = float(440.0 * 2.0 ** ((midi - 69.0) / 12.0))
    return fn(freq, dur, vel, sr, rng, **{**params, **overrides})
