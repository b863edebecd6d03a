"""The feature cache: ``prepare()`` builds it once, :class:`FeatureCache` memory-maps it for training.

Layout of one cache (``CACHE_DIR/<name>-<key>/``)::

    features.npy   float16 [clips, n_mels, frames], written incrementally, read with mmap
    splits.csv     one row per clip: path, group, label, split, offset (seconds)
    files.csv      one row per used file: path, label, group, split, seconds, clips
    meta.json      options, classes, normalisation statistics, skipped files; written last

``<key>`` hashes every option that affects the contents (feature config, split fractions and seed, and a
fingerprint of the input files' paths, labels, sizes and mtimes), so changing any of them builds a new
cache and the same options reuse the old one. A cache is built in a hidden temporary folder and renamed
into place only when complete, and :meth:`FeatureCache.open` checks meta.json and the array shape, so an
interrupted run never leaves something that loads as valid.
"""

from musicnas.data.cache.lifecycle import cache_key, find_caches, is_cache, open_data, prepare
from musicnas.data.cache.reader import (
    CACHE_FORMAT,
    CACHE_VERSION,
    FEATURES_FILE,
    FILES_FILE,
    META_FILE,
    SPLITS_FILE,
    FeatureCache,
    cache_problem,
)

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "FEATURES_FILE",
    "FILES_FILE",
    "META_FILE",
    "SPLITS_FILE",
    "FeatureCache",
    "cache_key",
    "cache_problem",
    "find_caches",
    "is_cache",
    "open_data",
    "prepare",
]
