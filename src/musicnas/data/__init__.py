"""Audio in, cached log-mel features out: decoding, clips, splits, features, cache, demo music."""

from __future__ import annotations

import importlib

# Imported on first use so that `import musicnas.data.synth` (numpy only) does not pull in torch.
_EXPORTS = {
    "FeatureConfig": "musicnas.data.features",
    "LogMel": "musicnas.data.features",
    "FeatureCache": "musicnas.data.cache",
    "open_data": "musicnas.data.cache",
    "prepare": "musicnas.data.cache",
    "load_audio": "musicnas.data.audio",
    "iter_audio_blocks": "musicnas.data.audio",
    "AudioSkip": "musicnas.data.audio",
    "clips_from_waveform": "musicnas.data.extract",
    "iter_file_clips": "musicnas.data.extract",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
