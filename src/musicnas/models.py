"""The model-type registry: how a model is built from its JSON description (``bundle.json["model"]``).

``macro`` and ``micro`` (the ENAS fixed networks) and their extracted sub-networks are built in; other
modules register their own types with :func:`register_model_type`, e.g. the baselines' CNN::

    @register_model_type("cnn")
    def build_cnn(arch, in_channels, num_classes, channels, dropout, **kwargs) -> nn.Module: ...

A model of such a type records the registering module (``"module"``); building it from a description
imports that module only if it is a ``musicnas.*`` module, and then only builders that module registered
can be called. The registry sits below everything that registers or builds (spaces, baselines,
training) and below ``musicnas.export``, which only reads and writes bundles.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from musicnas.runtime import MusicnasError, describe_exception

ModelBuilder = Callable[..., torch.nn.Module]
_MODEL_TYPES: dict[str, tuple[ModelBuilder, str]] = {}  # name -> (builder, registering module)


def register_model_type(name: str):
    """Decorator: makes ``builder(arch, in_channels, num_classes, channels, dropout, **kwargs)`` buildable
    from a bundle whose ``model.type`` is ``name``. ``arch`` is None for models without an architecture."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        _MODEL_TYPES[name] = (builder, builder.__module__)
        return builder

    return decorate


@register_model_type("macro")
@register_model_type("micro")
def build_enas_net(arch, in_channels: int, num_classes: int, channels=None, dropout: float = 0.1, **kwargs):
    """The fixed (retrain-from-scratch) network of an ENAS architecture, for either space."""
    if arch is None:
        raise MusicnasError("an ENAS model needs its architecture (arch.json)")
    from musicnas.spaces import get_space_module

    return get_space_module(arch.space.type).FixedNet(
        arch, in_channels=in_channels, num_classes=num_classes, channels=channels, dropout=dropout, **kwargs
    )


@register_model_type("macro_subnet")
@register_model_type("micro_subnet")
def build_enas_subnet(
    arch, in_channels: int, num_classes: int, channels=None, dropout: float = 0.0, **kwargs
):
    """The sub-network of an architecture cut out of its space's search network (shipped with the search's
    shared weights, no retraining: see musicnas.export.subnet)."""
    if arch is None:
        raise MusicnasError("an extracted ENAS sub-network needs its architecture (arch.json)")
    from musicnas.spaces import get_space_module

    space = get_space_module(arch.space.type)
    search_net = space.SearchNet(
        arch.space, in_channels=in_channels, num_classes=num_classes, dropout=dropout
    )
    return space.extract_subnet(search_net, arch)


ENAS_MODEL_TYPES = ("macro", "micro", "macro_subnet", "micro_subnet")


@dataclass
class ModelSpec:
    """How to rebuild a model: its registered type and JSON keyword arguments (``bundle.json["model"]``)."""

    type: str
    in_channels: int
    num_classes: int
    channels: Any = None
    dropout: float = 0.0
    kwargs: dict = field(default_factory=dict)
    module: str | None = None  # module that registers ``type`` (for non-built-in types)

    @classmethod
    def for_arch(
        cls, arch, in_channels: int, num_classes: int, channels=None, dropout: float = 0.1, **kwargs
    ):
        return cls(arch.space.type, in_channels, num_classes, channels, dropout, dict(kwargs))

    @classmethod
    def for_type(
        cls, name: str, in_channels: int, num_classes: int, channels=None, dropout: float = 0.0, **kwargs
    ):
        """Spec of a registered non-ENAS model type (records its module so a fresh process finds it)."""
        if name not in _MODEL_TYPES:
            raise MusicnasError(
                f"model type {name!r} is not registered; decorate its builder with register_model_type"
            )
        module = _MODEL_TYPES[name][1]
        return cls(name, in_channels, num_classes, channels, dropout, dict(kwargs), module)

    @property
    def is_enas(self) -> bool:
        return self.type in ENAS_MODEL_TYPES

    def to_dict(self, arch=None) -> dict:
        d = {
            "type": self.type,
            "space": arch.space.type if arch is not None else None,
            "in_channels": int(self.in_channels),
            "num_classes": int(self.num_classes),
            "channels": self.channels,
            "dropout": float(self.dropout),
            "kwargs": dict(self.kwargs),
        }
        if self.module and not self.is_enas:
            d["module"] = self.module
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "bundle.json") -> ModelSpec:
        if not isinstance(d, dict):
            raise MusicnasError(f"{where}: 'model' must be an object")
        try:
            return cls(
                type=require_key(d, "type", str, where),
                in_channels=int(require_key(d, "in_channels", int, where)),
                num_classes=int(require_key(d, "num_classes", int, where)),
                channels=d.get("channels"),
                dropout=float(d.get("dropout", 0.0)),
                kwargs=dict(d.get("kwargs") or {}),
                module=d.get("module"),
            )
        except (TypeError, ValueError) as exc:
            raise MusicnasError(f"{where}: malformed 'model' entry ({exc})") from exc


def require_key(d: dict, key: str, kind: type, where: str):
    """``d[key]`` checked to be a ``kind``; a missing or mistyped key is a MusicnasError naming ``where``."""
    if key not in d:
        raise MusicnasError(
            f"{where} lacks {key!r}; the bundle is incomplete: train it again or restore the file"
        )
    value = d[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise MusicnasError(f"{where}: {key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


_MODULE_NAME = re.compile(r"^musicnas(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _builder_for(spec: ModelSpec) -> ModelBuilder:
    if spec.type not in _MODEL_TYPES and spec.module:
        # Only the project's own modules may be imported, and only builders they registered are called.
        if not _MODULE_NAME.match(spec.module):
            raise MusicnasError(
                f"bundle names module {spec.module!r} for model type {spec.type!r}; only musicnas modules are allowed"
            )
        try:
            importlib.import_module(spec.module)
        except ImportError as exc:
            raise MusicnasError(
                f"model type {spec.type!r} needs module {spec.module}, which is not installed"
            ) from exc
    if spec.type not in _MODEL_TYPES:
        raise MusicnasError(
            f"unknown model type {spec.type!r} in the bundle; known: {', '.join(sorted(_MODEL_TYPES))}"
        )
    return _MODEL_TYPES[spec.type][0]


def build_model(spec: ModelSpec, arch=None) -> torch.nn.Module:
    """A freshly initialised model of ``spec`` (the architecture is required for ENAS types)."""
    builder = _builder_for(spec)
    try:
        return builder(
            arch,
            in_channels=spec.in_channels,
            num_classes=spec.num_classes,
            channels=spec.channels,
            dropout=spec.dropout,
            **spec.kwargs,
        )
    except MusicnasError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError, OverflowError, MemoryError) as exc:
        raise MusicnasError(
            f"cannot build model type {spec.type!r} from the bundle's settings: {describe_exception(exc)}"
        ) from exc
