"""The ENAS micro-space controller (reference: ``micro_controller.py``).

For each cell (normal, then reduction, one LSTM run carried across both) and each node: two input
indices, chosen by attention over the LSTM states of the earlier tensors (the two cell inputs have
zero anchors, as in the reference), then two ops. Decision order per node is
``index_1, index_2, op_1, op_2``; the architecture stores ``[index_1, op_1, index_2, op_2]``.
"""

from __future__ import annotations

import torch
from torch import nn

from musicnas.runtime import MusicnasError
from musicnas.search.controller import Controller, DecisionPass, LSTMPolicy
from musicnas.spaces.micro.arch import NUM_CELL_INPUTS, NUM_OPS, MicroArch

# The reference's learned op bias starts at +10 for the two sep-convs; under tanh this saturates, so
# their logits start (and, since tanh'(10) ~ 1e-8, stay) near the maximum: a strong prior for convs.
OP_BIAS_INIT = (10.0, 10.0) + (0.0,) * (NUM_OPS - 2)
# A fixed (not learned) bias added to the normal cell's op logits only: favours convs there.
NORMAL_CELL_OP_BIAS = (0.25, 0.25) + (-0.25,) * (NUM_OPS - 2)


class MicroController(Controller):
    """LSTM controller for :class:`~musicnas.spaces.micro.MicroSpace` (see enas-reference.md §3).

    ``tanh_constant`` squashes the index logits to ``[-c, c]`` and the op logits to
    ``[-c / op_tanh_reduce, c / op_tanh_reduce]``; ``None`` switches squashing off.
    """

    def __init__(
        self,
        space,
        seed: int = 0,
        lstm_size: int = 64,
        tanh_constant: float | None = 1.1,
        op_tanh_reduce: float = 2.5,
        temperature: float | None = None,
        init_range: float = 0.1,
        normal_cell_bias: bool = True,
    ):
        super().__init__(space, seed)
        if getattr(space, "type", None) != "micro":
            raise MusicnasError(f"MicroController needs a micro space, got {getattr(space, 'type', space)!r}")
        if op_tanh_reduce <= 0:
            raise MusicnasError(f"op_tanh_reduce must be positive, got {op_tanh_reduce}")
        self.num_nodes = int(space.num_nodes)
        self.tanh_constant = tanh_constant
        self.op_tanh_reduce = float(op_tanh_reduce)
        self.temperature = temperature
        self.normal_cell_bias = bool(normal_cell_bias)
        self.lstm = LSTMPolicy(lstm_size, init_range)
        self.op_embedding = nn.Embedding(NUM_OPS, lstm_size)
        self.op_logits = nn.Linear(lstm_size, NUM_OPS, bias=False)
        self.attn_anchor = nn.Linear(lstm_size, lstm_size, bias=False)  # W1, applied to earlier h_j
        self.attn_query = nn.Linear(lstm_size, lstm_size, bias=False)  # W2, applied to h_now
        self.attn_v = nn.Linear(lstm_size, 1, bias=False)
        self.op_bias = nn.Parameter(torch.zeros(NUM_OPS))
        self.lstm.reset_uniform(self)
        with torch.no_grad():
            self.op_bias.copy_(torch.tensor(OP_BIAS_INIT))
        self.register_buffer("normal_op_bias", torch.tensor(NORMAL_CELL_OP_BIAS), persistent=False)

    # -- logits -------------------------------------------------------------------------------------
    def _index_logits(self, raw: torch.Tensor) -> torch.Tensor:
        if self.temperature is not None:
            raw = raw / self.temperature
        if self.tanh_constant is not None:
            raw = self.tanh_constant * torch.tanh(raw)
        return raw

    def _op_logits(self, h: torch.Tensor, normal: bool) -> torch.Tensor:
        logits = self.op_logits(h)[0] + self.op_bias
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            logits = (self.tanh_constant / self.op_tanh_reduce) * torch.tanh(logits)
        if normal and self.normal_cell_bias:
            logits = logits + self.normal_op_bias
        return logits

    # -- the walk -----------------------------------------------------------------------------------
    def _walk(self, arch, decisions: DecisionPass):
        if arch is not None:
            if getattr(arch, "space", None) != self.space:
                raise MusicnasError(
                    "architecture belongs to a different micro space than this controller "
                    f"({getattr(arch, 'space', None)} vs {self.space})"
                )
            forced_cells = arch.cells()
        state = self.lstm.initial_state()
        cells = []
        for cell_id, cell_name in enumerate(("normal", "reduction")):
            normal = cell_id == 0
            inputs = self.lstm.start
            anchors: list[torch.Tensor] = []  # LSTM state of each tensor the nodes may read
            anchor_keys: list[torch.Tensor] = []  # W1 h_j, computed once per tensor
            for _ in range(NUM_CELL_INPUTS):
                h, state = self.lstm.step(inputs, state)
                anchors.append(torch.zeros_like(h))  # the cell inputs carry no information (reference)
                anchor_keys.append(self.attn_anchor(h))
            nodes = []
            for node in range(self.num_nodes):
                given = None if arch is None else forced_cells[cell_id][node]
                indices = []
                for slot in range(2):
                    h, state = self.lstm.step(inputs, state)
                    query = torch.tanh(torch.cat(anchor_keys, dim=0) + self.attn_query(h))  # [n, hidden]
                    logits = self._index_logits(self.attn_v(query).squeeze(-1))
                    index = decisions.choose(
                        f"{cell_name}.node{node}.index{slot + 1}",
                        logits,
                        None if given is None else given[2 * slot],
                    )
                    indices.append(int(index))
                    inputs = anchors[int(index)]
                ops = []
                for slot in range(2):
                    h, state = self.lstm.step(inputs, state)
                    op = decisions.choose(
                        f"{cell_name}.node{node}.op{slot + 1}",
                        self._op_logits(h, normal),
                        None if given is None else given[2 * slot + 1],
                    )
                    ops.append(int(op))
                    inputs = self.op_embedding(op.view(1))
                h, state = self.lstm.step(inputs, state)
                anchors.append(h)
                anchor_keys.append(self.attn_anchor(h))
                inputs = self.lstm.start
                nodes.append((indices[0], ops[0], indices[1], ops[1]))
            cells.append(tuple(nodes))
        if arch is not None:
            return arch
        return MicroArch(space=self.space, normal=cells[0], reduction=cells[1])

    def arch_stats(self, arch) -> dict:
        return micro_arch_stats(arch)


def micro_arch_stats(arch) -> dict:
    """Share of sep-conv ops: the micro space has no skip connections to report."""
    ops = [node[k] for cell in arch.cells() for node in cell for k in (1, 3)]
    return {"conv_rate": sum(op in (0, 1) for op in ops) / len(ops)}
