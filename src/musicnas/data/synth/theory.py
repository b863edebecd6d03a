"""Just enough music theory to compose: scales, modes, diatonic chords, timing grid."""

from __future__ import annotations

import numpy as np

# Heptatonic modes as semitone offsets from the tonic. Harmony is always built from one of these;
# melodies may use a pentatonic/blues subset (see ``melody_scale``).
MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
}

# Melody subsets given as indices into the mode (so they stay consonant with the chords).
MELODY_SUBSETS: dict[str, tuple[int, ...]] = {
    "full": (0, 1, 2, 3, 4, 5, 6),
    "pentatonic": (0, 1, 2, 4, 5),  # major-ish modes: 1 2 3 5 6
    "minor_pentatonic": (0, 2, 3, 4, 6),  # minor-ish modes: 1 b3 4 5 b7
}


def midi_to_hz(midi: float | np.ndarray) -> float | np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def scale_pitch(mode: tuple[int, ...], tonic: int, degree: int) -> int:
    """MIDI pitch of a (possibly negative or > 6) scale degree above ``tonic``."""
    octave, step = divmod(degree, len(mode))
    return tonic + 12 * octave + mode[step]


def chord_pitches(mode: tuple[int, ...], tonic: int, degree: int, size: int = 3) -> list[int]:
    """Diatonic chord stacked in thirds on ``degree`` (size 3: triad, 4: seventh, 5: ninth)."""
    return [scale_pitch(mode, tonic, degree + 2 * k) for k in range(size)]


def voice_chord(pitches: list[int], center: int, rng: np.random.Generator, spread: int = 0) -> list[int]:
    """Moves each chord tone into the octave around ``center`` (close voicing, random inversion);
    ``spread`` > 0 lifts some tones an octave for an open voicing."""
    voiced = []
    for p in pitches:
        q = center + ((p - center) % 12)
        if q > center + 6:
            q -= 12
        if spread and rng.random() < 0.35:
            q += 12
        voiced.append(q)
    return sorted(set(voiced))


class Grid:
    """Time positions for a tempo, metre and swing: step k of bar b -> seconds."""

    def __init__(self, bpm: float, beats_per_bar: int = 4, steps_per_beat: int = 4, swing: float = 0.0):
        self.bpm = bpm
        self.beat = 60.0 / bpm
        self.beats_per_bar = beats_per_bar
        self.steps_per_beat = steps_per_beat
        self.steps_per_bar = beats_per_bar * steps_per_beat
        self.step = self.beat / steps_per_beat
        self.bar = self.beat * beats_per_bar
        # swing delays every second 8th note (steps_per_beat 4: steps 2, 6, ...; or off 16ths for 16th swing)
        self.swing = swing

    def time(self, bar: int, step: float) -> float:
        t = bar * self.bar + step * self.step
        if self.swing and float(step).is_integer():
            s = int(step)
            if self.steps_per_beat == 4 and s % 4 == 2:
                t += self.swing * self.step  # swung 8ths
            elif self.steps_per_beat == 4 and s % 2 == 1:
                t += 0.5 * self.swing * self.step  # lighter swing on the 16ths between
        return t
