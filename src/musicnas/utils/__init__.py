"""Small shared utilities: atomic I/O, safe checkpoints, logging."""
