"""The peer side of benchmarks/search_step.py: one NNI 3.0 one-shot ENAS supernet training step on one
macro architecture, run by an interpreter that has NNI 3.0 (never imported by musicnas).

NNI's wheel ships no ENAS macro space, so this builds one from ``nni.nas.nn.pytorch`` primitives
(``ModelSpace``, ``LayerChoice`` over the six branches, ``InputChoice(n_chosen=None, reduction="sum")``
over the earlier layers' outputs) and lets ``nni.nas.strategy.ENAS`` turn it into its path-sampling
supernet (``mutate_model``). The architecture is set through the supernet's own ``resample(memo)``, so
only the sampled path runs, as in NNI's ENAS training loop. Layout as the ENAS macro search network:
stem conv3x3 -> BN; per layer branch -> (sum of the chosen earlier outputs) -> BN; at each pool layer
every earlier output passes through its own factorized reduction (the supernet cannot know which ones a
later sample reads); global average pool -> dropout -> linear.

Usage (by search_step.py): ``python nni_enas_macro.py '<json spec>'``; prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace
from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingInput
from nni.nas.strategy import ENAS
from torch import nn

OP_NAMES = ("conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")


def conv_bn_relu(c: int, kernel: int, separable: bool = False) -> nn.Sequential:
    if separable:
        conv = nn.Sequential(
            nn.Conv2d(c, c, kernel, padding=kernel // 2, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False)
        )
    else:
        conv = nn.Conv2d(c, c, kernel, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c), nn.ReLU())


class ConvBranch(nn.Module):
    def __init__(self, c: int, kernel: int, separable: bool):
        super().__init__()
        self.inp = conv_bn_relu(c, 1)
        self.out = conv_bn_relu(c, kernel, separable)

    def forward(self, x):
        return self.out(self.inp(x))


class PoolBranch(nn.Module):
    def __init__(self, c: int, kind: str):
        super().__init__()
        self.inp = conv_bn_relu(c, 1)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False) if kind == "avg" else nn.MaxPool2d(3, 1, 1)

    def forward(self, x):
        return self.pool(self.inp(x))


class FactorizedReduce(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.path1 = nn.Conv2d(c, c // 2, 1, bias=False)
        self.path2 = nn.Conv2d(c, c - c // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.path1(x[:, :, ::2, ::2]), self.path2(shifted[:, :, ::2, ::2])], 1))


class MacroSpace(ModelSpace):
    def __init__(self, layers: int, c: int, branches: int, classes: int, pool_layers, stem_stride: int):
        super().__init__()
        self.pool_layers = set(pool_layers)
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(c))
        factories = {
            "conv_3x3": lambda: ConvBranch(c, 3, False),
            "sep_conv_3x3": lambda: ConvBranch(c, 3, True),
            "conv_5x5": lambda: ConvBranch(c, 5, False),
            "sep_conv_5x5": lambda: ConvBranch(c, 5, True),
            "avg_pool_3x3": lambda: PoolBranch(c, "avg"),
            "max_pool_3x3": lambda: PoolBranch(c, "max"),
        }
        self.ops = nn.ModuleList(
            LayerChoice([factories[name]() for name in OP_NAMES[:branches]], label=f"op{i}")
            for i in range(layers)
        )
        self.skips = nn.ModuleList(
            InputChoice(i, n_chosen=None, reduction="sum", label=f"skip{i}") for i in range(1, layers)
        )
        self.skip_bns = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(1, layers))
        self.reductions = nn.ModuleDict(
            {
                str(p): nn.ModuleList(FactorizedReduce(c) for _ in range(p + 2))
                for p in sorted(self.pool_layers)
            }
        )
        self.dropout = nn.Dropout(0.0)
        self.linear = nn.Linear(c, classes, bias=False)

    def forward(self, x):
        tensors = [self.stem(x)]  # [stem, L0, L1, ...]
        for i, op in enumerate(self.ops):
            out = op(tensors[i])
            if i > 0:
                out = self.skip_bns[i - 1](out + self.skips[i - 1](tensors[:i]))
            tensors.append(out)
            if i in self.pool_layers:
                tensors = [red(t) for red, t in zip(self.reductions[str(i)], tensors, strict=True)]
        return self.linear(self.dropout(torch.flatten(F.adaptive_avg_pool2d(tensors[-1], 1), 1)))


def sum_of_any_subset(module, name, memo, mutate_kwargs):
    """NNI 3.0's PathSamplingInput refuses n_chosen=None in its own hook; it runs a chosen subset fine."""
    if type(module) is InputChoice and module.n_chosen is None:
        return PathSamplingInput(module.n_candidates, None, "sum", module.label)
    return None


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    space = MacroSpace(
        spec["layers"], spec["channels"], spec["branches"], spec["classes"], spec["pool_layers"],
        spec["stem_stride"],
    )  # fmt: skip
    supernet = ENAS(mutation_hooks=[sum_of_any_subset]).mutate_model(space)
    memo = {f"op{i}": op for i, op in enumerate(spec["ops"])}
    for i, bits in enumerate(spec["skips"][1:], start=1):
        memo[f"skip{i}"] = [j for j, bit in enumerate(bits) if bit]
    applied = {}
    for module in supernet.modules():
        if hasattr(module, "resample") and getattr(module, "label", None) is not None:
            label = module.label.rsplit("/", 1)[-1]  # labels may carry the model's scope as a prefix
            applied.update(module.resample({module.label: memo[label]}))
    if len(applied) != len(memo):
        raise SystemExit(f"set {len(applied)} of {len(memo)} choices: {sorted(applied)}")
    opt_cfg = spec["optimizer"]
    optimizer = torch.optim.SGD(
        supernet.parameters(),
        lr=opt_cfg["lr"],
        momentum=opt_cfg["momentum"],
        nesterov=opt_cfg["nesterov"],
        weight_decay=opt_cfg["weight_decay"],
    )
    h, w = spec["input"]
    x = torch.randn(spec["batch"], 1, h, w)
    y = torch.randint(0, spec["classes"], (spec["batch"],))
    if spec.get("peer_channels_last"):
        supernet = supernet.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    supernet.train()
    times = []
    for _ in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(supernet(x), y)
        loss.backward()
        if opt_cfg["grad_clip"]:
            nn.utils.clip_grad_norm_(supernet.parameters(), opt_cfg["grad_clip"])
        optimizer.step()
        float(loss)
        times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "step_s": times[spec["warmup"] :],
                "first_step_s": times[0],
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "choices": {k: applied[k] for k in sorted(applied)},
            }
        )
    )


if __name__ == "__main__":
    main()
