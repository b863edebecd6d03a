"""Model bundles: a folder that holds everything needed to rebuild a trained model and run it on audio.

Layout (docs/architecture.md, "Model bundle")::

    MODEL/model.safetensors   weights (safetensors: loading can never execute code)
    MODEL/arch.json           architecture JSON (ENAS models only)
    MODEL/bundle.json         {"format": "musicnas-bundle", "version": 1, "model": {...}, "features": {...},
                               "classes": [...], "mean": [...], "std": [...], "digests": {...}}
    MODEL/summary.json        training summary (optional for loading)

``digests`` holds the sha256 of the weights file, of arch.json and of bundle.json's own other entries, taken
at save time; loading refuses a bundle whose files no longer match and names the file that changed (an
edited arch.json that swaps a parameter-free op, reordered class names: both would load and mislabel
silently otherwise). JSON files are hashed in a canonical form, so re-indenting one is not a change.
Bundles written before digests existed load with a warning.

``bundle.json["model"]`` names a *registered model type* and its JSON keyword arguments (see
:mod:`musicnas.models`, the registry); nothing in the bundle is ever imported or unpickled as code.
"""

from __future__ import annotations

import hashlib
import json
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
from musicnas.utils.io import atomic_write_bytes, atomic_write_json, ensure_dir, read_json

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


DIGEST_ALGORITHM = "sha256"
DIGESTS_KEY = "digests"


def bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_digest(obj: Any) -> str:
    """Digest of a JSON value in canonical form (sorted keys, no spaces): formatting is not content."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return bytes_digest(text.encode("utf-8"))


def bundle_record_digest(meta: dict) -> str:
    """Digest of bundle.json's entries other than the digests themselves."""
    return json_digest({k: v for k, v in meta.items() if k != DIGESTS_KEY})


def check_digest(recorded: dict, name: str, actual: str, root: Path) -> None:
    """Refuses ``root/name`` when its digest differs from the one recorded at save time."""
    expected = recorded.get(name)
    if expected is None:
        raise MusicnasError(
            f"{root / BUNDLE_FILE} records no digest for {name}; the bundle was altered after it was saved: "
            "restore it from the original or train again"
        )
    if expected != actual:
        raise MusicnasError(
            f"{root / name} was changed after the bundle was saved (its {DIGEST_ALGORITHM} no longer matches "
            f"the one in {BUNDLE_FILE}); a changed {name} would make the model predict wrong labels. "
            "Restore the file from the original bundle or train again"
        )


def save_weights(path: str | Path, model: torch.nn.Module) -> str:
    """Writes the model's weights as safetensors; returns the file's digest."""
    data = safetensors_save(_state_for_saving(model), metadata={"format": "pt"})
    atomic_write_bytes(path, data)
    return bytes_digest(data)


def load_weights(path: str | Path, digests: dict | None = None) -> dict[str, torch.Tensor]:
    """Reads a safetensors file; anything else (a pickle, a truncated file) is a MusicnasError. With
    ``digests`` (a bundle's record), a file that differs from the one saved is refused."""
    path = Path(path)
    if not path.is_file():
        raise MusicnasError(f"weights file not found: {path}")
    data = path.read_bytes()
    if digests is not None:
        check_digest(digests, path.name, bytes_digest(data), path.parent)
    try:
        return safetensors_load(data)
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
    out = ensure_dir(out_dir, "model bundle folder")
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
    digests = {"algorithm": DIGEST_ALGORITHM, WEIGHTS_FILE: save_weights(out / WEIGHTS_FILE, model)}
    if arch is not None:
        arch_json = arch.to_json()
        atomic_write_json(out / ARCH_FILE, arch_json)
        digests[ARCH_FILE] = json_digest(json.loads(json.dumps(arch_json)))  # as a reader will parse it
    record = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "model": model_spec.to_dict(arch),
        "features": feature_config.to_dict(),
        "classes": list(classes),
        "mean": mean,
        "std": std,
    }
    digests[BUNDLE_FILE] = bundle_record_digest(json.loads(json.dumps(record)))
    atomic_write_json(out / BUNDLE_FILE, {**record, DIGESTS_KEY: digests})
    if summary is not None:
        atomic_write_json(out / SUMMARY_FILE, summary)
    from musicnas.export.card import write_model_card

    write_model_card(out)
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
    digests = _recorded_digests(meta, root)
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
    except MusicnasError as exc:
        raise MusicnasError(f"{where}: 'features': {exc}") from exc
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
        if digests is not None:
            check_digest(digests, ARCH_FILE, json_digest(read_json(arch_path, "architecture file")), root)
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
    state = load_weights(weights_path, digests)
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


def _recorded_digests(meta: dict, root: Path) -> dict | None:
    """The bundle's digests after checking bundle.json's own; None (with a warning) for old bundles."""
    digests = meta.get(DIGESTS_KEY)
    if digests is None:
        log.warning(
            "%s records no file digests (saved by an older musicnas): changes to its files cannot be detected; "
            "save the bundle again (train or extract) to add them",
            root,
        )
        return None
    if not isinstance(digests, dict) or digests.get("algorithm") != DIGEST_ALGORITHM:
        raise MusicnasError(
            f"{root / BUNDLE_FILE}: 'digests' is malformed (want an object with algorithm {DIGEST_ALGORITHM!r}); "
            "the bundle was altered after it was saved: restore it from the original or train again"
        )
    check_digest(digests, BUNDLE_FILE, bundle_record_digest(meta), root)
    return digests


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
