"""A TuNAS-style factorised policy: one independent categorical distribution per decision.

TuNAS (Bender et al. 2020) replaced ENAS's LSTM by a table of logits, one categorical per decision,
learned by REINFORCE with an exponential-moving-average baseline and updated every few shared-weight
steps (enas-reference.md §5). With no recurrence there is nothing to carry between decisions, so

* the probability of an architecture is the product of its decisions' probabilities,
* ``most_likely()`` (argmax decision by decision) is exactly the mode of the joint distribution,
* every logit starts at 0: the initial policy is uniform over the space.

Decisions, in the same order and flat encoding as the LSTM controllers:

* macro, whole channels: per layer the op, then one Bernoulli per earlier skip source;
* macro, channel ranges: per layer and branch a start and a count (counts past ``C - start`` masked);
* micro: per cell and node, ``index_1, index_2, op_1, op_2``.

Skip Bernoullis use the logits ``[-q, q]`` of one parameter ``q`` and get the same skip penalty as the
LSTM controller (:func:`musicnas.search.controller.skip_kl`).
"""

from __future__ import annotations

import torch
from torch import nn

from musicnas.runtime import MusicnasError
from musicnas.search.controller import DEFAULT_SKIP_TARGET, Controller, DecisionPass, choose_count, skip_kl

__all__ = ["FactorizedController"]


class FactorizedController(Controller):
    """Independent categorical logits per decision of a macro or micro space (the Controller contract:
    ``sample``, ``log_prob``, ``most_likely``, ``decision_probs``, checkpointable ``state_dict``)."""

    def __init__(self, space, seed: int = 0, skip_target: float = DEFAULT_SKIP_TARGET):
        super().__init__(space, seed)
        kind = getattr(space, "type", None)
        if kind not in ("macro", "micro"):
            raise MusicnasError(f"no factorised policy for search space type {kind!r}: use macro or micro")
        if not 0.0 < skip_target < 1.0:
            raise MusicnasError(f"skip_target must lie strictly between 0 and 1, got {skip_target}")
        self.skip_target = float(skip_target)
        self.logits = nn.ParameterDict()
        if kind == "macro":
            n, b, c = int(space.num_layers), int(space.num_branches), int(space.channels)
            if space.whole_channels:
                self.logits["op"] = nn.Parameter(torch.zeros(n, b))
            else:
                self.logits["start"] = nn.Parameter(torch.zeros(n, b, c))
                self.logits["count"] = nn.Parameter(torch.zeros(n, b, c))  # count - 1 in 0..C-1
            # skip q of layer l, source j < l, stored in a flat vector layer by layer
            self.logits["skip"] = nn.Parameter(torch.zeros(n * (n - 1) // 2))
        else:
            from musicnas.spaces.micro.arch import NUM_CELL_INPUTS, NUM_OPS

            nodes = int(space.num_nodes)
            # node j of a cell reads one of j + 2 tensors; pad to the widest and mask the rest
            self.logits["index"] = nn.Parameter(torch.zeros(2, nodes, 2, nodes + NUM_CELL_INPUTS - 1))
            self.logits["op"] = nn.Parameter(torch.zeros(2, nodes, 2, NUM_OPS))

    # -- the walk -----------------------------------------------------------------------------------
    def _walk(self, arch, decisions: DecisionPass):
        if self.space.type == "macro":
            return self._walk_macro(arch, decisions)
        return self._walk_micro(arch, decisions)

    def _walk_macro(self, arch, decisions: DecisionPass):
        from musicnas.spaces.macro.arch import MacroArch

        space = self.space
        forced = None if arch is None else list(arch.to_flat())
        if forced is not None and len(forced) != space.flat_length:
            raise MusicnasError(
                f"architecture has {len(forced)} decisions but this controller's space expects {space.flat_length}"
            )
        pos = 0

        def given(n: int = 1):
            nonlocal pos
            if forced is None:
                return None
            value = forced[pos] if n == 1 else forced[pos : pos + n]
            pos += n
            return value

        flat: list[int] = []
        skip_offset = 0
        for layer in range(space.num_layers):
            if space.whole_channels:
                op = decisions.choose(f"layer{layer}.op", self.logits["op"][layer], given())
                flat.append(int(op))
            else:
                for branch in range(space.num_branches):
                    start = decisions.choose(
                        f"layer{layer}.branch{branch}.start", self.logits["start"][layer, branch], given()
                    )
                    logits = self.logits["count"][layer, branch]
                    count_minus_one = choose_count(
                        decisions, f"layer{layer}.branch{branch}", logits, start, given()
                    )
                    flat.extend([int(start), int(count_minus_one) + 1])
            if layer > 0:
                q = self.logits["skip"][skip_offset : skip_offset + layer]
                skip_offset += layer
                skip_logits = torch.stack([-q, q], dim=-1)  # [layer, 2]
                skips = decisions.choose(f"layer{layer}.skips", skip_logits, given(layer))
                decisions.add_penalty(skip_kl(skip_logits, self.skip_target))
                flat.extend(int(s) for s in skips)
        return arch if arch is not None else MacroArch.from_flat(flat, space)

    def _walk_micro(self, arch, decisions: DecisionPass):
        from musicnas.spaces.micro.arch import NUM_CELL_INPUTS, MicroArch

        if arch is not None and getattr(arch, "space", None) != self.space:
            raise MusicnasError(
                "architecture belongs to a different micro space than this controller "
                f"({getattr(arch, 'space', None)} vs {self.space})"
            )
        cells = []
        for cell_id, cell_name in enumerate(("normal", "reduction")):
            nodes = []
            for node in range(self.space.num_nodes):
                given = None if arch is None else arch.cells()[cell_id][node]
                reachable = node + NUM_CELL_INPUTS
                indices, ops = [], []
                for slot in range(2):
                    logits = self.logits["index"][cell_id, node, slot, :reachable]
                    index = decisions.choose(
                        f"{cell_name}.node{node}.index{slot + 1}",
                        logits,
                        None if given is None else given[2 * slot],
                    )
                    indices.append(int(index))
                for slot in range(2):
                    op = decisions.choose(
                        f"{cell_name}.node{node}.op{slot + 1}",
                        self.logits["op"][cell_id, node, slot],
                        None if given is None else given[2 * slot + 1],
                    )
                    ops.append(int(op))
                nodes.append((indices[0], ops[0], indices[1], ops[1]))
            cells.append(tuple(nodes))
        if arch is not None:
            return arch
        return MicroArch(space=self.space, normal=cells[0], reduction=cells[1])

    def arch_stats(self, arch) -> dict:
        if self.space.type == "macro":
            return {"skip_rate": arch.skip_rate}
        from musicnas.search.micro_controller import micro_arch_stats

        return micro_arch_stats(arch)
