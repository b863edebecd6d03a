"""Composition: a song skeleton (tempo grid, key, mode, chord timeline) and the parts played over it
(drum pattern hits, bass lines, chord comping, melodies) as lists of notes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from musicnas.data.synth.theory import MELODY_SUBSETS, Grid, chord_pitches, scale_pitch, voice_chord


@dataclass
class Note:
    time: float  # seconds
    midi: float
    dur: float  # seconds held
    vel: float  # 0..1


@dataclass
class Chord:
    start: int  # global step
    steps: int
    degree: int
    size: int


@dataclass
class Song:
    grid: Grid
    mode: tuple[int, ...]
    key_pc: int
    n_bars: int
    chords: list[Chord] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.n_bars * self.grid.steps_per_bar

    def t(self, step: float) -> float:
        """Seconds at a global step (swing applied within the bar)."""
        spb = self.grid.steps_per_bar
        bar, s = divmod(step, spb)
        return self.grid.time(int(bar), s)

    def tonic(self, lowest: int) -> int:
        """The tonic's MIDI pitch at or just above ``lowest``."""
        return lowest + (self.key_pc - lowest) % 12

    def chord_at(self, step: int) -> Chord:
        for chord in self.chords:
            if chord.start <= step < chord.start + chord.steps:
                return chord
        return self.chords[-1]

    def dur(self, steps: float) -> float:
        return steps * self.grid.step


def make_song(
    rng, bpm, beats_per_bar, swing, mode, key_pc, seconds, progression, chord_steps, chord_size
) -> Song:
    grid = Grid(bpm, beats_per_bar=beats_per_bar, swing=swing)
    n_bars = int(np.ceil(seconds / grid.bar)) + 1
    song = Song(grid=grid, mode=mode, key_pc=key_pc, n_bars=n_bars)
    step, i = 0, 0
    while step < song.total_steps:
        song.chords.append(Chord(step, chord_steps, progression[i % len(progression)], chord_size))
        step += chord_steps
        i += 1
    return song


def _vel(rng, base: float, spread: float = 0.07) -> float:
    return float(np.clip(base + rng.normal(0.0, spread), 0.05, 1.0))


# ----------------------------------------------------------------------------------------------- drums
VELOCITY = {"X": 1.0, "x": 0.78, "g": 0.32}


def drum_hits(song: Song, rng, patterns: list[dict], fill_prob: float, humanize: float, density: float = 1.0):
    """Hits (piece, time, velocity) from 1-bar patterns: ``X`` accent, ``x`` hit, ``g`` ghost, ``?`` maybe.

    One main pattern per track, an occasional alternative bar, a tom/snare fill at the end of some
    4-bar phrases, and a crash on phrase starts when the kit has one."""
    spb = song.grid.steps_per_bar
    main = patterns[int(rng.integers(len(patterns)))]
    alt = patterns[int(rng.integers(len(patterns)))]
    hits = []
    for bar in range(song.n_bars):
        pat = alt if (bar % 4 == 3 and rng.random() < 0.35) else main
        fill = bar % 4 == 3 and rng.random() < fill_prob
        for piece, row in pat.items():
            for s in range(spb):
                c = row[s % len(row)]
                if c == ".":
                    continue
                if fill and s >= spb // 2 and piece not in ("kick",):
                    continue
                if c == "?":
                    if rng.random() > 0.5 * density:
                        continue
                    v = 0.5
                else:
                    v = VELOCITY[c]
                    if (
                        c != "X"
                        and density < 1.0
                        and piece in ("hat", "shaker", "ride")
                        and rng.random() > density
                    ):
                        continue
                t = song.t(bar * spb + s) + rng.normal(0.0, humanize)
                hits.append((piece, max(t, 0.0), _vel(rng, v, 0.06)))
        if fill:
            pieces = ["snare", "tom_hi", "tom_lo"]
            for s in range(spb // 2, spb):
                if rng.random() < 0.7:
                    piece = pieces[min(2, (s - spb // 2) * 3 // (spb // 2))]
                    hits.append((piece, song.t(bar * spb + s), _vel(rng, 0.7)))
        if bar % 4 == 0 and bar > 0:
            hits.append(("crash", song.t(bar * spb), _vel(rng, 0.8)))
    return hits


# ------------------------------------------------------------------------------------------------ bass
def bass_line(song: Song, rng, style: str) -> list[Note]:
    spb = song.grid.steps_per_bar
    spbeat = song.grid.steps_per_beat
    tonic = song.tonic(33)
    mode = song.mode
    notes: list[Note] = []

    def root(ch: Chord, octave: int = 0) -> int:
        return scale_pitch(mode, tonic, ch.degree % 7) + 12 * octave

    def fifth(ch: Chord) -> int:
        return scale_pitch(mode, tonic, ch.degree % 7 + 4)

    for ch in song.chords:
        r = root(ch)
        if style == "root8":
            for s in range(0, ch.steps, 2):
                p = r if rng.random() > 0.12 else (fifth(ch) if rng.random() < 0.5 else r + 12)
                notes.append(
                    Note(song.t(ch.start + s), p, song.dur(1.7), _vel(rng, 0.8 if s % 4 == 0 else 0.7))
                )
        elif style == "gallop16":
            for s in range(ch.steps):
                if s % 4 == 1 and rng.random() < 0.3:
                    continue
                notes.append(Note(song.t(ch.start + s), r, song.dur(0.8), _vel(rng, 0.85)))
        elif style == "offbeat":
            for s in range(2, ch.steps, 4):
                notes.append(
                    Note(
                        song.t(ch.start + s),
                        r + (12 if rng.random() < 0.15 else 0),
                        song.dur(1.6),
                        _vel(rng, 0.85),
                    )
                )
        elif style == "octave":
            for s in range(0, ch.steps, 2):
                notes.append(
                    Note(song.t(ch.start + s), r + (12 if (s // 2) % 2 else 0), song.dur(1.4), _vel(rng, 0.8))
                )
        elif style == "walking":
            nxt = root(song.chord_at(ch.start + ch.steps))
            prev = r
            for b, s in enumerate(range(0, ch.steps, spbeat)):
                if b == 0:
                    p = r
                elif s + spbeat >= ch.steps:  # approach the next root by a semitone
                    p = nxt + (1 if rng.random() < 0.5 else -1)
                else:
                    cands = [scale_pitch(mode, tonic, ch.degree % 7 + k) for k in (1, 2, 3, 4, 5, -1, -2)]
                    cands = [c for c in cands if abs(c - prev) <= 5] or cands
                    p = cands[int(rng.integers(len(cands)))]
                notes.append(Note(song.t(ch.start + s), p, song.dur(spbeat * 0.9), _vel(rng, 0.75)))
                prev = p
        elif style == "follow_kick":  # long notes on a syncopated hip-hop rhythm
            for s in (0, 7, 10) if ch.steps >= 16 else (0,):
                for k in range(0, ch.steps, spb):
                    if s + k < ch.steps and (s == 0 or rng.random() < 0.6):
                        notes.append(
                            Note(
                                song.t(ch.start + k + s),
                                r,
                                song.dur(min(6, ch.steps - s - k)),
                                _vel(rng, 0.9),
                            )
                        )
        elif style == "reggae":
            riff = [(0, 0), (3, 0), (6, 2), (8, 4), (11, 4), (14, 2)]
            for k in range(0, ch.steps, spb):
                for s, deg in riff:
                    if s + k < ch.steps and (s == 0 or rng.random() < 0.75):
                        p = scale_pitch(mode, tonic, ch.degree % 7 + deg)
                        notes.append(Note(song.t(ch.start + k + s), p, song.dur(2.2), _vel(rng, 0.85)))
        elif style == "root_fifth":
            for k in range(0, ch.steps, spbeat * 2):
                p = r if (k // (spbeat * 2)) % 2 == 0 else fifth(ch) - 12 * (rng.random() < 0.5)
                notes.append(Note(song.t(ch.start + k), p, song.dur(spbeat * 1.8), _vel(rng, 0.75)))
        elif style == "sustain":
            notes.append(Note(song.t(ch.start), r, song.dur(ch.steps * 0.98), _vel(rng, 0.7)))
        elif style == "none":
            pass
        else:  # pragma: no cover - guarded by the genre table tests
            raise ValueError(f"unknown bass style {style}")
    return notes


# ------------------------------------------------------------------------------------------------ comp
def comping(song: Song, rng, style: str, center: int = 60) -> list[Note]:
    spb = song.grid.steps_per_bar
    spbeat = song.grid.steps_per_beat
    tonic = song.tonic(center - 12)
    notes: list[Note] = []
    for ch in song.chords:
        pitches = chord_pitches(song.mode, tonic, ch.degree % 7, ch.size)
        voiced = voice_chord(pitches, center, rng, spread=1 if style in ("pad", "arpeggio") else 0)

        def add(step, chord_notes, steps_held, vel, strum=0.0, start=ch.start):
            for i, p in enumerate(chord_notes):
                notes.append(Note(song.t(start + step) + i * strum, p, song.dur(steps_held), vel))

        if style == "pad":
            add(0, voiced, ch.steps * 0.98, _vel(rng, 0.6))
        elif style in ("power8", "power16", "power_sustain"):
            r = scale_pitch(song.mode, song.tonic(40), ch.degree % 7)
            power = [r, r + 7, r + 12]
            unit = {"power8": 2, "power16": 1, "power_sustain": ch.steps}[style]
            for s in range(0, ch.steps, unit):
                add(s, power, unit * 0.85, _vel(rng, 0.8 if s % 4 == 0 else 0.65), strum=0.004)
        elif style == "skank":
            for k in range(0, ch.steps, spb):
                for s in range(spbeat, spb, 2 * spbeat):
                    if s + k < ch.steps:
                        add(k + s, voiced, 0.9, _vel(rng, 0.7))
                        if rng.random() < 0.3 and s + k + 2 < ch.steps:
                            add(k + s + 2, voiced, 0.9, _vel(rng, 0.5))
        elif style == "comp_swing":
            rootless = voice_chord(pitches[1:] if len(pitches) > 3 else pitches, center, rng)
            for s in range(0, ch.steps, 2):
                if rng.random() < (0.45 if s % 4 == 2 else 0.25):
                    add(s, rootless, 1.5 + 2 * rng.random(), _vel(rng, 0.55))
        elif style == "strum":
            pattern = (0, 4, 6, 10, 12, 14) if spb == 16 else (0, 4, 8)
            low = [scale_pitch(song.mode, song.tonic(40), ch.degree % 7)] + voice_chord(pitches, 55, rng)
            for k in range(0, ch.steps, spb):
                for s in pattern:
                    if s + k < ch.steps:
                        down = s % 4 == 0
                        seq = low + voiced if down else (voiced[::-1])
                        add(k + s, seq, 2.5, _vel(rng, 0.7 if down else 0.5), strum=0.012)
        elif style in ("arpeggio", "arpeggio16"):
            unit = 1 if style == "arpeggio16" else 2
            seq = voiced + [voiced[1] + 12] if len(voiced) > 1 else voiced
            order = seq + seq[-2:0:-1]
            for i, s in enumerate(range(0, ch.steps, unit)):
                p = order[i % len(order)]
                notes.append(Note(song.t(ch.start + s), p, song.dur(unit * 1.6), _vel(rng, 0.6)))
        elif style == "stab":
            for s in range(2, ch.steps, 4):
                if rng.random() < 0.85:
                    add(s, voiced, 0.9, _vel(rng, 0.7))
        elif style == "block":
            for s in range(0, ch.steps, spbeat):
                add(s, voiced, spbeat * 0.9, _vel(rng, 0.65 if s % spb == 0 else 0.5))
        elif style == "none":
            pass
        else:  # pragma: no cover
            raise ValueError(f"unknown comp style {style}")
    return notes


# ---------------------------------------------------------------------------------------------- melody
def melody(
    song: Song,
    rng,
    density: float,
    unit: int,
    subset: str,
    low: int = 62,
    legato: float = 0.9,
    phrase_bars: int = 2,
    max_len: int = 8,
) -> list[Note]:
    """A motif of ``phrase_bars`` bars, random-walking over the scale (chord tones on strong beats),
    repeated in an A A' B A form so the tune is recognisable as a tune."""
    spb = song.grid.steps_per_bar
    tonic = song.tonic(low)
    degrees = MELODY_SUBSETS[subset]
    pool = [d + 7 * o for o in (0, 1) for d in degrees] + [7 + degrees[0] + 7]
    phrase_steps = phrase_bars * spb

    def make_phrase():
        onsets = [s for s in range(0, phrase_steps, unit) if rng.random() < density or s == 0]
        idx = int(rng.integers(2, len(pool) - 2))
        out = []
        for i, s in enumerate(onsets):
            idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(pool) - 1))
            nxt = onsets[i + 1] if i + 1 < len(onsets) else phrase_steps
            length = min(nxt - s, max_len * unit)
            out.append((s, idx, length))
        return out

    a, b = make_phrase(), make_phrase()
    a2 = a[: max(1, len(a) // 2)] + make_phrase()[len(a) // 2 :] if len(a) > 1 else a
    form = [a, a2, b, a]
    notes = []
    for k, start in enumerate(range(0, song.total_steps, phrase_steps)):
        if rng.random() < 0.15:  # a resting phrase
            continue
        for s, idx, length in form[k % 4]:
            g = start + s
            if g >= song.total_steps:
                break
            ch = song.chord_at(g)
            d = pool[idx]
            if s % spb == 0:  # strong beat: snap to the nearest chord tone of the current chord
                tones = [ch.degree % 7 + 2 * j + 7 * o for o in (-1, 0, 1, 2) for j in range(3)]
                d = min(tones, key=lambda x: (abs(x - d), x))
            notes.append(
                Note(song.t(g), scale_pitch(song.mode, tonic, d), song.dur(length * legato), _vel(rng, 0.7))
            )
    return notes
