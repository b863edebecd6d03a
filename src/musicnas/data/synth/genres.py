"""The genre table: what makes each demo class sound like itself.

Classes differ the way genres do (tempo, drum pattern, swing, mode and chords, instruments, dynamics,
mix), and each track draws its own key, tempo, instruments, levels, reverb, EQ and noise from the
genre's ranges. Ranges deliberately overlap between neighbours (rock/metal share distorted guitars and
backbeats, electronic/disco share four-on-the-floor, jazz/hiphop share swing and electric piano,
classical/ambient/folk share drum-less acoustic textures, reggae/hiphop share tempo and organ) so a
classifier has to learn combinations rather than one give-away feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Part:
    """One pitched part: a style from compose.py and the instruments a track may choose from."""

    style: str | tuple[str, ...]  # a tuple: each track picks one
    instruments: tuple[str, ...]
    level_db: tuple[float, float] = (-6.0, 0.0)  # drawn per track, relative to the other parts
    presence: float = 1.0  # probability that the part plays at all in a track
    fx: dict = field(default_factory=dict)  # part effects: drive, cutoff, highpass
    args: dict = field(default_factory=dict)  # extra arguments to the style function


@dataclass(frozen=True)
class Genre:
    name: str
    bpm: tuple[float, float]
    modes: tuple[str, ...]
    progressions: tuple[tuple[int, ...], ...]
    chord_steps: tuple[int, ...] = (16,)
    chord_size: tuple[int, ...] = (3,)
    beats_per_bar: tuple[int, ...] = (4,)
    swing: tuple[float, float] = (0.0, 0.0)
    drums: tuple[dict, ...] = ()  # 1-bar patterns, 16 steps (12 in 3/4); empty: no drums
    kit: dict = field(default_factory=dict)
    drum_level_db: tuple[float, float] = (-8.0, 1.0)
    drum_presence: float = 1.0
    breakdown_prob: float = 0.35  # chance that the drums rest for a few bars of the excerpt
    fill_prob: float = 0.3
    humanize: float = 0.004  # seconds of timing jitter
    bass: Part | None = None
    comp: Part | None = None
    lead: Part | None = None
    reverb_wet: tuple[float, float] = (0.1, 0.25)
    rt60: tuple[float, float] = (0.8, 1.6)
    drive: tuple[float, float] = (0.0, 0.0)  # master saturation
    loudness_db: tuple[float, float] = (-20.0, -14.0)  # master RMS in dBFS
    dynamics: str = "flat"  # flat | swell | crescendo


ROCK_BEATS = (
    {"kick": "x.......x.x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
    {"kick": "x.....x.x.......", "snare": "....X.......X..g", "hat": "x.x.x.x.x.x.x.x."},
    {"kick": "x.......x.......", "snare": "....X.......X...", "ride": "x.x.x.x.x.x.x.x."},
)
FOUR_ON_FLOOR = (
    {
        "kick": "X...X...X...X...",
        "clap": "....x.......x...",
        "open_hat": "..x...x...x...x.",
        "hat": "x.x.x.x.x.x.x.x.",
    },
    {"kick": "X...X...X...X...", "open_hat": "..x...x...x...x.", "hat": "xxxxxxxxxxxxxxxx"},
    {"kick": "X...X...X...X...", "clap": "....x.......x...", "hat": "..x...x...x...x."},
)

GENRES_TABLE: tuple[Genre, ...] = (
    Genre(
        name="rock",
        bpm=(96, 140),
        modes=("major", "mixolydian", "minor"),
        progressions=((0, 3, 4, 3), (0, 4, 5, 3), (0, 6, 3, 0), (5, 3, 0, 4)),
        chord_steps=(16, 32),
        drums=ROCK_BEATS,
        kit={
            "pieces": ("kick", "snare", "hat", "ride", "crash", "tom_hi", "tom_lo"),
            "kick": {"decay": (0.15, 0.3)},
        },
        bass=Part(("root8", "root8", "follow_kick"), ("pick_bass", "square_bass"), (-4, 0)),
        comp=Part(
            ("power8", "power8", "power_sustain", "strum"),
            ("electric_guitar", "electric_guitar", "organ", "piano"),
            (-3, 1),
            fx={"drive": (0.5, 16), "cutoff": (2500, 6000)},
        ),
        lead=Part(
            "melody",
            ("electric_guitar", "saw_lead", "organ"),
            (-6, -1),
            presence=0.6,
            fx={"drive": (1, 5)},
            args={"density": 0.5, "unit": 2, "subset": "minor_pentatonic"},
        ),
        reverb_wet=(0.08, 0.2),
        drive=(0.5, 3.0),
        loudness_db=(-16, -11),
    ),
    Genre(
        name="electronic",
        bpm=(118, 132),
        modes=("minor", "dorian", "phrygian"),
        progressions=((0, 5, 3, 4), (0, 0, 5, 6), (0, 3, 0, 4), (0, 6, 5, 6)),
        chord_steps=(16, 32),
        drums=FOUR_ON_FLOOR,
        kit={
            "pieces": ("kick", "clap", "hat", "open_hat", "crash"),
            "kick": {"decay": (0.2, 0.4), "click": (0.1, 0.4)},
        },
        fill_prob=0.05,
        humanize=0.0005,
        bass=Part("offbeat", ("saw_bass", "square_bass", "sub808"), (-3, 1)),
        comp=Part(("pad", "stab", "pad"), ("pad", "strings", "synth_stab", "piano", "epiano"), (-9, -2)),
        lead=Part("arpeggio16", ("square_lead", "saw_lead", "bell"), (-8, -3), presence=0.7),
        reverb_wet=(0.15, 0.35),
        rt60=(1.0, 2.2),
        loudness_db=(-15, -10),
    ),
    Genre(
        name="jazz",
        bpm=(110, 190),
        modes=("major", "dorian"),
        progressions=((1, 4, 0, 0), (1, 4, 0, 5), (0, 5, 1, 4), (2, 5, 1, 4)),
        chord_steps=(16, 8),
        chord_size=(4, 4, 5),
        swing=(0.25, 0.5),
        drums=(
            {
                "ride": "x...x.x.x...x.x.",
                "hat": "....x.......x...",
                "kick": "g...............",
                "snare": "..?....?...?..?.",
            },
            {
                "ride": "x...x.x.x...x.x.",
                "hat": "....x.......x...",
                "brush": "x...x...x...x...",
                "snare": "......?.......?.",
            },
        ),
        kit={
            "pieces": ("kick", "snare", "hat", "ride", "brush", "tom_hi", "tom_lo", "crash"),
            "snare": {"tone_mix": (0.2, 0.4)},
        },
        drum_level_db=(-12, -3),
        drum_presence=0.8,
        fill_prob=0.1,
        humanize=0.008,
        bass=Part("walking", ("upright_bass", "upright_bass", "pick_bass"), (-3, 2)),
        comp=Part(
            ("comp_swing", "comp_swing", "block"),
            ("epiano", "piano", "organ", "electric_guitar", "nylon_guitar"),
            (-5, 0),
        ),
        lead=Part(
            "melody",
            ("brass", "flute", "saw_lead", "piano"),
            (-6, -1),
            presence=0.7,
            args={"density": 0.55, "unit": 2, "subset": "full"},
        ),
        reverb_wet=(0.1, 0.25),
        loudness_db=(-22, -16),
    ),
    Genre(
        name="classical",
        bpm=(60, 110),
        modes=("major", "minor", "harmonic_minor"),
        progressions=((0, 3, 4, 0), (0, 5, 1, 4), (0, 4, 5, 2, 3, 0, 3, 4), (0, 3, 6, 2, 5, 1, 4, 0)),
        chord_steps=(16, 8),
        beats_per_bar=(4, 3),
        bass=Part("sustain", ("strings", "piano"), (-6, -2), presence=0.85, args={}),
        comp=Part(
            ("arpeggio", "arpeggio", "block", "pad", "arpeggio16"),
            ("piano", "harp", "strings", "organ", "nylon_guitar"),
            (-5, 0),
        ),
        lead=Part(
            "melody",
            ("strings", "flute", "piano"),
            (-4, 0),
            args={"density": 0.45, "unit": 4, "subset": "full", "legato": 1.0},
        ),
        reverb_wet=(0.25, 0.45),
        rt60=(1.6, 2.8),
        loudness_db=(-26, -17),
        dynamics="crescendo",
    ),
    Genre(
        name="hiphop",
        bpm=(78, 98),
        modes=("minor", "dorian", "phrygian"),
        progressions=((0, 0, 5, 5), (0, 3, 0, 3), (0, 5, 3, 4), (0, 6, 5, 4)),
        chord_steps=(16, 32),
        chord_size=(3, 4),
        swing=(0.1, 0.35),
        drums=(
            {"kick": "x......x.xx.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
            {"kick": "x.........x.....", "snare": "....X.......X...", "hat": "xxxxxxxxxxxxxxxx"},
            {"kick": "x.....x...x.....", "snare": "........X.......", "hat": "x.xxx.x.xxxxx.x."},
        ),
        kit={
            "pieces": ("kick", "snare", "clap", "hat", "open_hat"),
            "kick": {"decay": (0.25, 0.5), "click": (0.3, 0.8)},
        },
        fill_prob=0.05,
        bass=Part("follow_kick", ("sub808", "saw_bass", "upright_bass"), (-3, 2)),
        comp=Part(
            ("pad", "stab", "arpeggio"), ("epiano", "piano", "strings", "organ", "pad", "harp"), (-7, -1)
        ),
        lead=Part(
            "melody",
            ("bell", "glock", "flute", "epiano"),
            (-9, -4),
            presence=0.6,
            args={"density": 0.35, "unit": 2, "subset": "minor_pentatonic"},
        ),
        reverb_wet=(0.05, 0.2),
        loudness_db=(-17, -12),
    ),
    Genre(
        name="reggae",
        bpm=(66, 90),
        modes=("major", "minor", "mixolydian", "dorian"),
        progressions=((0, 3), (0, 4, 3, 4), (0, 5, 3, 4), (0, 6)),
        chord_steps=(16, 32),
        swing=(0.0, 0.25),
        drums=(
            {"kick": "........X.......", "rim": "........x.......", "hat": "x.x.x.x.x.x.x.x."},
            {"kick": "X...X...X...X...", "rim": "....x.......x...", "hat": "..x...x...x...x."},
            {"kick": "........X.......", "snare": "........x.......", "hat": "x.xxx.xxx.xxx.xx"},
        ),
        kit={"pieces": ("kick", "snare", "rim", "hat", "tom_hi", "tom_lo"), "kick": {"decay": (0.2, 0.35)}},
        fill_prob=0.2,
        bass=Part("reggae", ("pick_bass", "square_bass", "sub808"), (0, 3)),
        comp=Part("skank", ("organ", "muted_guitar", "epiano", "piano", "electric_guitar"), (-6, -1)),
        lead=Part(
            "melody",
            ("organ", "brass", "epiano"),
            (-8, -3),
            presence=0.5,
            args={"density": 0.4, "unit": 2, "subset": "pentatonic"},
        ),
        reverb_wet=(0.1, 0.3),
        loudness_db=(-19, -13),
    ),
    Genre(
        name="metal",
        bpm=(130, 190),
        modes=("phrygian", "minor", "harmonic_minor"),
        progressions=((0, 1, 0, 6), (0, 5, 6, 0), (0, 0, 1, 0), (0, 3, 1, 6)),
        chord_steps=(8, 16),
        drums=(
            {"kick": "xxxxxxxxxxxxxxxx", "snare": "....X.......X...", "crash": "x.......x......."},
            {"kick": "x.x.x.x.x.x.x.x.", "snare": "....X.......X...", "ride": "x.x.x.x.x.x.x.x."},
            {"kick": "xx..xx..xx..xx..", "snare": "........X.......", "hat": "x.x.x.x.x.x.x.x."},
            {"kick": "x.......x.x.....", "snare": "....X.......X...", "crash": "x.x.x.x.x.x.x.x."},
        ),
        kit={
            "pieces": ("kick", "snare", "hat", "ride", "crash", "tom_hi", "tom_lo"),
            "kick": {"decay": (0.08, 0.15), "click": (0.6, 1.0)},
        },
        bass=Part(
            ("gallop16", "gallop16", "root8"), ("pick_bass", "saw_bass"), (-4, 0), fx={"drive": (1, 4)}
        ),
        comp=Part(
            ("power16", "power16", "power8"),
            ("muted_guitar", "electric_guitar"),
            (-2, 2),
            fx={"drive": (2, 14), "cutoff": (2500, 6000)},
        ),
        lead=Part(
            "melody",
            ("electric_guitar", "saw_lead"),
            (-6, -2),
            presence=0.4,
            fx={"drive": (5, 15)},
            args={"density": 0.7, "unit": 1, "subset": "full"},
        ),
        reverb_wet=(0.05, 0.15),
        drive=(0.0, 2.0),
        loudness_db=(-16, -10),
    ),
    Genre(
        name="ambient",
        bpm=(56, 84),
        modes=("lydian", "major", "dorian", "minor"),
        progressions=((0, 3), (0, 5, 3, 4), (0, 1), (0, 4, 5, 3)),
        chord_steps=(32, 64),
        chord_size=(3, 4, 5),
        drums=({"shaker": "x.g.x.g.x.g.x.g."}, {"shaker": "x...g...x...g..."}),
        kit={"pieces": ("shaker",)},
        drum_level_db=(-18, -8),
        drum_presence=0.4,
        bass=Part("sustain", ("pad", "sub808", "strings"), (-8, -3), presence=0.6),
        comp=Part(("pad", "pad", "arpeggio"), ("pad", "strings", "organ", "epiano"), (-2, 2)),
        lead=Part(
            "melody",
            ("bell", "glock", "harp", "flute", "piano"),
            (-8, -2),
            presence=0.8,
            args={"density": 0.25, "unit": 4, "subset": "pentatonic", "max_len": 4},
        ),
        reverb_wet=(0.4, 0.65),
        rt60=(2.2, 3.0),
        loudness_db=(-27, -18),
        dynamics="swell",
    ),
    Genre(
        name="folk",
        bpm=(84, 128),
        modes=("major", "mixolydian", "dorian"),
        progressions=((0, 3, 0, 4), (0, 4, 5, 3), (0, 3, 4, 4), (0, 6, 3, 0)),
        chord_steps=(16, 32),
        beats_per_bar=(4, 4, 3),
        drums=({"shaker": "x.xxx.xxx.xxx.xx", "kick": "x.......x......."}, {"brush": "x...x...x...x..."}),
        kit={"pieces": ("kick", "shaker", "brush")},
        drum_level_db=(-12, -5),
        drum_presence=0.5,
        bass=Part("root_fifth", ("upright_bass", "pick_bass"), (-5, 0), presence=0.7),
        comp=Part(("strum", "strum", "arpeggio"), ("steel_guitar", "nylon_guitar"), (-2, 2)),
        lead=Part(
            "melody",
            ("flute", "harp", "steel_guitar", "organ"),
            (-7, -2),
            presence=0.7,
            args={"density": 0.5, "unit": 2, "subset": "pentatonic"},
        ),
        reverb_wet=(0.1, 0.3),
        loudness_db=(-23, -16),
    ),
    Genre(
        name="disco",
        bpm=(110, 126),
        modes=("dorian", "major", "minor"),
        progressions=((0, 3), (0, 4, 5, 3), (1, 4, 0, 5), (0, 6, 5, 4)),
        chord_steps=(16, 32),
        chord_size=(3, 4),
        drums=(
            {
                "kick": "X...X...X...X...",
                "snare": "....X.......X...",
                "open_hat": "..x...x...x...x.",
                "hat": "x.x.x.x.x.x.x.x.",
            },
            {"kick": "X...X...X...X...", "snare": "....X.......X...", "hat": "xxxxxxxxxxxxxxxx"},
        ),
        kit={"pieces": ("kick", "snare", "hat", "open_hat", "crash", "tom_hi", "tom_lo")},
        fill_prob=0.15,
        bass=Part("octave", ("pick_bass", "square_bass", "saw_bass"), (-3, 1)),
        comp=Part(("stab", "stab", "block"), ("strings", "muted_guitar", "epiano", "brass"), (-6, -1)),
        lead=Part(
            "melody",
            ("strings", "brass", "saw_lead"),
            (-7, -2),
            presence=0.6,
            args={"density": 0.5, "unit": 2, "subset": "full"},
        ),
        reverb_wet=(0.1, 0.3),
        loudness_db=(-17, -12),
    ),
)

GENRE_BY_NAME = {g.name: g for g in GENRES_TABLE}
GENRES: tuple[str, ...] = tuple(g.name for g in GENRES_TABLE)
