"""Audio in, cached log-mel features out: decoding, clips, splits, features, cache, demo music."""
