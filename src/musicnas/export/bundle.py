"""Model bundles: a folder that holds everything needed to rebuild a trained model and run it on audio.

Layout (docs/architecture.md, "Model bundle")::

    MODEL/model.safetensors   weights (safetensors: loading can never execute code)
    MODEL/arch.json           architecture JSON (ENAS models only)
    MODEL/bundle.json         {"format": "musicnas-bundle", "version": 1, "model": {...}, "features": {...},
                               "classes": [...], "mean": [...], "std": [...]}
    MODEL/summary.json        training summary (optional for loading)

``bundle.json["model"]`` names a *registered model type* and its JSON keyword arguments (see
:mod:`musicnas.models`, the registry); nothing in the bundle is ever imported or unpickled as code.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from musicnas.models import ModelSpec, build_model, require_key
from musicnas.runtime import MusicnasError
from musicnas.utils.io import atomic_write_bytes, atomic_write_json, read_json

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "musicnas-bundle"
BUNDLE_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
BUNDLE_FILE = "bundle.json"
ARCH_FILE = "arch.json"
SUMMARY_FILE = "summary.json"
# Formats a bundle must never be loaded from: they are pickles and can run code when opened.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def _state_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors that share no storage; channels_last weights are not contiguous
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(path: str | Path, model: torch.nn.Module) -> None:
    atomic_write_bytes(path, safetensors_save(_state_for_saving(model), metadata={"format": "pt"}))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a safetensors file; anything else (a pickle, a truncated file) is a MusicnasError."""
    path = Path(path)
    if not path.is_file():
        raise MusicnasError(f"weights file not found: {path}")
    try:
        return safetensors_load(path.read_bytes())
    except Exception as exc:  # safetensors raises its own error type for any malformed header
        raise MusicnasError(
            f"{path} is not a valid safetensors file ({type(exc).__name__}: {str(exc)[:160]}); "
            "the bundle is corrupt or was tampered with: train it again or restore the file"
        ) from exc


def check_state_matches(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raises a MusicnasError naming missing, unexpected and mis-shaped tensors."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} shape mismatches (e.g. {'; '.join(mis_shaped[:3])})")
    if problems:
        raise MusicnasError(
            f"weights in {where} do not fit the model described by bundle.json: {', '.join(problems)}. "
            "The weights and bundle.json come from different models; train again or restore the files."
        )


def save_bundle(
    out_dir,
    model: torch.nn.Module,
    arch,
    feature_config,
    classes: list[str],
    mean,
    std,
    summary: dict | None = None,
    *,
    model_spec: ModelSpec | None = None,
) -> Path:
    """Writes a model bundle (each file atomically). ``model_spec`` says how to rebuild ``model``; for an
    ENAS model it may be left out and is then taken from ``arch`` with ``model.channels``/``model.dropout``
    when the model exposes them. The spec is checked by rebuilding the model and comparing tensor shapes,
    so a bundle that cannot be loaded back is never written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model_spec is None:
        if arch is None:
            raise MusicnasError("save_bundle needs model_spec for a model without an ENAS architecture")
        model_spec = ModelSpec.for_arch(
            arch,
            in_channels=int(getattr(model, "in_channels", 1)),
            num_classes=len(classes),
            channels=getattr(model, "channels", None),
            dropout=_model_dropout(model),
        )
    if model_spec.num_classes != len(classes):
        raise MusicnasError(
            f"model has {model_spec.num_classes} outputs but {len(classes)} class names were given"
        )
    check_state_matches(build_model(model_spec, arch), model.state_dict(), "the model being saved")
    mean = [float(v) for v in torch.as_tensor(mean).flatten().tolist()]
    std = [float(v) for v in torch.as_tensor(std).flatten().tolist()]
    save_weights(out / WEIGHTS_FILE, model)
    if arch is not None:
        atomic_write_json(out / ARCH_FILE, arch.to_json())
    atomic_write_json(
        out / BUNDLE_FILE,
        {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "model": model_spec.to_dict(arch),
            "features": feature_config.to_dict(),
            "classes": list(classes),
            "mean": mean,
            "std": std,
        },
    )
    if summary is not None:
        atomic_write_json(out / SUMMARY_FILE, summary)
    return out


def _model_dropout(model: torch.nn.Module) -> float:
    # Dropout does not change the weights or eval outputs; it is recorded only to retrain alike.
    value = getattr(model, "dropout", None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.1


@dataclass
class BundleContents:
    """A validated, loaded bundle (model on the CPU, in eval mode)."""

    path: Path
    model: torch.nn.Module
    spec: ModelSpec
    arch: Any
    feature_config: Any
    classes: list[str]
    mean: torch.Tensor
    std: torch.Tensor
    summary: dict | None


def read_bundle(path) -> BundleContents:
    """Loads and validates every part of a bundle; any problem is a MusicnasError naming the file.

    Order matters for safety: JSON is parsed and checked first, the weights are read only with
    safetensors, and the model is built from a registered builder, so nothing in the folder is executed."""
    root = Path(path)
    if not root.is_dir():
        raise MusicnasError(
            f"model bundle not found: {root} (pass the folder written by `musicnas train --out`)"
        )
    meta_path = root / BUNDLE_FILE
    meta = read_json(meta_path, what="bundle description")
    where = str(meta_path)
    if not isinstance(meta, dict):
        raise MusicnasError(f"{where} must hold a JSON object")
    if meta.get("format") != BUNDLE_FORMAT:
        raise MusicnasError(
            f"{where} is not a musicnas bundle (format {meta.get('format')!r}, want {BUNDLE_FORMAT!r})"
        )
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > BUNDLE_VERSION or version < 1:
        raise MusicnasError(
            f"{where} has bundle version {version!r}; this musicnas reads version {BUNDLE_VERSION}"
        )
    spec = ModelSpec.from_dict(meta.get("model"), where)
    classes = require_key(meta, "classes", list, where)
    if not classes or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise MusicnasError(f"{where}: 'classes' must be a non-empty list of distinct names")
    if len(classes) != spec.num_classes:
        raise MusicnasError(
            f"{where}: {len(classes)} class names but the model has {spec.num_classes} outputs"
        )
    features = require_key(meta, "features", dict, where)
    from musicnas.data.features import FeatureConfig

    try:
        feature_config = FeatureConfig.from_dict(features)
    except MusicnasError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise MusicnasError(f"{where}: malformed 'features' ({exc})") from exc
    mean = _stat_vector(meta, "mean", feature_config.n_mels, where)
    std = _stat_vector(meta, "std", feature_config.n_mels, where)
    if bool((std <= 0).any()):
        raise MusicnasError(f"{where}: 'std' must be positive")

    arch = None
    if spec.is_enas:
        from musicnas.spaces import load_arch

        arch_path = root / ARCH_FILE
        if not arch_path.is_file():
            raise MusicnasError(f"{arch_path} is missing; an ENAS bundle needs its architecture file")
        try:
            arch = load_arch(arch_path)
            arch.validate()
        except MusicnasError as exc:
            raise MusicnasError(f"{arch_path}: {exc}") from exc
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise MusicnasError(f"{arch_path} is malformed ({exc}); restore it from the search run") from exc

    weights_path = root / WEIGHTS_FILE
    if not weights_path.is_file():
        pickles = sorted(p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
        hint = (
            f" ({', '.join(pickles)} present: pickled weights are never loaded because they can run code)"
            if pickles
            else ""
        )
        raise MusicnasError(f"{weights_path} is missing{hint}; train the model again or restore the file")
    state = load_weights(weights_path)
    model = build_model(spec, arch)
    check_state_matches(model, state, str(weights_path))
    model.load_state_dict(state, strict=True)
    model.eval()
    summary = None
    if (root / SUMMARY_FILE).is_file():
        try:
            summary = read_json(root / SUMMARY_FILE, what="training summary")
        except MusicnasError as exc:  # the summary is informative only; a broken one must not block use
            log.warning("ignoring %s", exc)
    return BundleContents(root, model, spec, arch, feature_config, list(classes), mean, std, summary)


def _stat_vector(meta: dict, key: str, n: int, where: str) -> torch.Tensor:
    values = require_key(meta, key, list, where)
    if len(values) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise MusicnasError(f"{where}: {key!r} must be {n} numbers (one per mel band)")
    if not all(math.isfinite(v) for v in values):
        raise MusicnasError(f"{where}: {key!r} holds non-finite numbers")
    return torch.tensor(values, dtype=torch.float32)


def load_bundle(path, device: str = "auto"):
    """Loads a bundle as a :class:`musicnas.export.classifier.Classifier` ready to ``predict``."""
    from musicnas.export.classifier import Classifier

    return Classifier(read_bundle(path), device=device)
