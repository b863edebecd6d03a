"""The demo music composer: genre-like classes of music composed and synthesised in numpy.

``generate_dataset`` writes a folder-per-class dataset (``musicnas data synth``); ``render_track``
renders one track to an array; ``GENRES`` lists the classes in order (``num_classes`` takes the first N).
"""

from musicnas.data.synth.dataset import generate_dataset, load_manifest
from musicnas.data.synth.genres import GENRES
from musicnas.data.synth.render import render_track, track_rng

__all__ = ["GENRES", "generate_dataset", "load_manifest", "render_track", "track_rng"]
