"""musicnas: neural architecture search (ENAS) for music audio classification."""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(model_dir, device: str = "auto"):
    """Loads a trained model bundle for prediction: ``musicnas.load("runs/model").predict("song.mp3")``."""
    from musicnas.export.bundle import load_bundle

    return load_bundle(model_dir, device=device)
