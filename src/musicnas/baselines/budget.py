"""The benchmark's compute budget, and how every method is held to it.

Compute is matched in **child training steps** (one step = one minibatch forward + backward + update
of a network's weights; every method uses the same data, batch size and loader, so an epoch is the same
number of steps for all of them):

* ENAS: ``search_epochs`` epochs of shared-weight training (one sampled architecture per step), the
  controller updates in between, deriving with ``derive_samples`` architectures, then the chosen
  architecture retrained from scratch for ``retrain_epochs`` epochs.
* Random search with weight sharing: the identical loop, epochs, steps and deriving with a uniform
  controller (its controller phase has nothing to train, so it is slightly cheaper in wall time).
* Random search retrained: ``random_k`` uniform architectures, each trained from scratch for
  ``search_epochs // random_k`` epochs (``search_epochs`` epochs of child steps in total, the same as the
  ENAS search), the best by validation accuracy then retrained for ``retrain_epochs`` epochs.
* Hand CNN: trained once for ``retrain_epochs`` epochs with the same training configuration as the
  searched architectures' final retrain (it spends no search budget: that is the point of comparing).
* Floor: log-mel statistics + logistic regression (seconds, no budget).

Steps, not wall time, are matched because wall time on a shared machine is noise and differs by
architecture; the table reports wall times next to accuracies so both are visible. The ranking study
reuses the ``random_k`` retrained architectures (their short-budget stand-alone validation accuracy)
and scores them with each supernet's shared weights, so it costs only forward passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from musicnas.runtime import MusicnasError


@dataclass(frozen=True)
class Budget:
    search_epochs: int = 20  # shared-weight epochs of ENAS and random-WS; total epochs of random-retrained
    retrain_epochs: int = 30  # final retrain of each searched architecture, and the hand CNN's training
    random_k: int = 10  # random-retrained architectures (also the ranking study's n)
    derive_samples: int = 100  # architectures sampled and scored when deriving (ENAS and random-WS)
    batch_size: int = 64  # every method, search and training
    space: str = "macro"
    num_layers: int = 12  # search space size options
    channels: int = 36  # search network width (and fixed-net base width)
    num_branches: int = 6
    stem_stride: int = 2  # macro: 2 halves the spectrogram in the stem (the cpu search preset); 1 = reference
    cnn_channels: int = 128  # hand CNN base width C (Won et al. use 128)
    cnn_blocks: int = 7
    controller_updates: int = 10  # controller updates per search epoch (random-WS: scoring passes)
    controller_archs: int = 8  # architectures per controller update

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(value, int) or isinstance(value, bool)):
                raise MusicnasError(f"budget {f.name} must be an integer, got {value!r}")
        for name in (
            "search_epochs", "retrain_epochs", "random_k", "derive_samples", "batch_size",
            "controller_updates", "controller_archs",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise MusicnasError(f"budget {name} must be at least 1, got {getattr(self, name)}")
        if self.search_epochs % self.random_k:
            raise MusicnasError(
                f"budget search_epochs ({self.search_epochs}) must be a multiple of random_k ({self.random_k}) "
                "so the k random architectures share the search budget equally; change one of them"
            )

    @property
    def random_epochs(self) -> int:
        """Epochs each random-retrained architecture gets in the search phase."""
        return self.search_epochs // self.random_k

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Budget] = {
    # the published ENAS macro network and Won et al.'s CNN at their own sizes; a GPU budget
    "full": Budget(
        search_epochs=150,
        retrain_epochs=100,
        random_k=10,
        derive_samples=100,
        batch_size=128,
        stem_stride=1,
        controller_updates=50,
        controller_archs=20,
    ),
    "default": Budget(),
    # demo data on 2 CPU cores in well under 30 minutes for every method and 3 seeds
    "reduced": Budget(
        search_epochs=12,
        retrain_epochs=10,
        random_k=6,
        derive_samples=20,
        batch_size=32,
        num_layers=4,
        channels=16,
        num_branches=4,
        # a quarter of Won et al.'s width: 36M MACs per clip, the same order as the searched networks
        cnn_channels=32,
        cnn_blocks=7,
        controller_updates=5,
        controller_archs=4,
    ),
    # tests: seconds
    "tiny": Budget(
        search_epochs=2,
        retrain_epochs=1,
        random_k=2,
        derive_samples=3,
        batch_size=16,
        num_layers=2,
        channels=16,
        num_branches=4,
        cnn_channels=4,
        cnn_blocks=3,
        controller_updates=2,
        controller_archs=2,
    ),
}


def parse_budget(spec: str | None) -> Budget:
    """``"reduced"`` or ``"reduced,search_epochs=8,random_k=4"`` or ``"search_epochs=8"`` (on the default)."""
    if not spec:
        return PRESETS["default"]
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    base = PRESETS["default"]
    if parts and "=" not in parts[0]:
        name = parts.pop(0)
        if name not in PRESETS:
            raise MusicnasError(f"unknown budget preset {name!r}: use one of {', '.join(PRESETS)}")
        base = PRESETS[name]
    known = {f.name: f for f in fields(Budget)}
    overrides: dict = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise MusicnasError(
                f"bad budget item {part!r}: expected KEY=VALUE with KEY one of {', '.join(known)}"
            )
        value = value.strip()
        if key == "space":
            overrides[key] = value
        else:
            try:
                overrides[key] = int(value)
            except ValueError:
                raise MusicnasError(f"budget {key} must be an integer, got {value!r}") from None
    return replace(base, **overrides)
