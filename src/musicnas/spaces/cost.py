"""Cost of a network: parameters and multiply-accumulates (MACs) for one input size.

MACs come from PyTorch's own counter (``torch.utils.flop_counter.FlopCounterMode``), which counts the
matrix work of convolutions (grouped and depthwise included), linear layers and matmuls; MACs = FLOPs / 2.
Element-wise work (BN, ReLU, pooling, additions) is not counted, as is usual for MACs.

Parameters:
* a plain network (no ``forward_args``): every parameter it holds, less training-only submodules it
  names in ``TRAINING_ONLY_MODULES`` (the micro fixed network's auxiliary head);
* a search network run on one architecture (``count_cost(search_net, shape, arch)``): the parameters
  that architecture actually uses. When the network offers ``subnet(*forward_args)`` (both musicnas
  spaces do: it returns the extracted sub-network, which holds copies of exactly the used weights, also
  the used slices in channel-range mode) its parameters are counted. Otherwise every parameter the
  forward pass reaches in the autograd graph is counted whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from musicnas.runtime import MusicnasError


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    latency_ms: float | None = None  # predicted by the latency table, when a search uses it

    def to_dict(self) -> dict:
        """``{"params": int, "macs": int}`` (``macs`` None when the counter could not trace the model),
        plus ``latency_ms`` (float) when the latency table predicted it."""
        out = {"params": int(self.params), "macs": None if self.macs is None else int(self.macs)}
        if self.latency_ms is not None:
            out["latency_ms"] = float(self.latency_ms)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Cost:
        latency = d.get("latency_ms")
        return cls(
            params=int(d["params"]),
            macs=None if d.get("macs") is None else int(d["macs"]),
            latency_ms=None if latency is None else float(latency),
        )


def _reached_parameters(output: torch.Tensor, model: nn.Module) -> int:
    """Parameters of ``model`` that ``output``'s autograd graph leads to (each counted whole)."""
    by_id = {id(p): p for p in model.parameters()}
    seen_nodes, found, stack = set(), {}, [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen_nodes:
            continue
        seen_nodes.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf tensor
        if variable is not None and id(variable) in by_id:
            found[id(variable)] = variable
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sum(p.numel() for p in found.values())


def _inference_parameters(model: nn.Module) -> int:
    """Parameters a deployed model holds: a network may name training-only submodules (the micro
    space's auxiliary head) in ``TRAINING_ONLY_MODULES``; they are left out, as the reference did."""
    skipped = {
        id(p)
        for name in getattr(model, "TRAINING_ONLY_MODULES", ())
        if isinstance(getattr(model, name, None), nn.Module)
        for p in getattr(model, name).parameters()
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in skipped)


def count_cost(model: nn.Module, input_shape: Sequence[int], *forward_args) -> Cost:
    """Parameters and MACs of ``model(x, *forward_args)`` for one input of ``input_shape``:
    ``(channels, height, width)`` (batch 1) or ``(batch, channels, height, width)``.

    The model runs once in eval mode on zeros (BN statistics untouched); its mode is restored."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or min(shape) < 1:
        raise MusicnasError(f"input shape must be (channels, height, width), got {tuple(input_shape)}")
    ref = next(model.parameters(), None)
    x = torch.zeros(
        shape, device=ref.device if ref is not None else "cpu", dtype=ref.dtype if ref is not None else None
    )
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        subnet = getattr(model, "subnet", None) if forward_args else None
        with torch.enable_grad(), counter:
            out = model(x, *forward_args)
        if not forward_args:
            params = _inference_parameters(model)
        elif callable(subnet):
            params = sum(p.numel() for p in subnet(*forward_args).parameters())
        else:
            params = _reached_parameters(out, model)
    finally:
        model.train(was_training)
    return Cost(params=int(params), macs=int(counter.get_total_flops()) // 2)
