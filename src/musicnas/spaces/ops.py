"""Building blocks shared by the macro and micro search spaces.

Every block works on one-channel, non-square spectrograms of any size: stride-2 blocks give
``ceil(H/2) x ceil(W/2)`` for odd and even sizes alike, so tensors reduced by different blocks (a
stride-2 conv, a stride-2 pool, a factorized reduction) always line up. Nothing here reshapes with
``.view``, so ``channels_last`` tensors pass through without copies or errors.

``OPS`` maps an op name to ``lambda C_in, C_out, stride: nn.Module`` (the layout of DARTS'
operations.py), so a space names its ops and builds them in one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

# The training-step optimisations below (one-pass subsampling in the factorized reduction, in-place ReLU
# after batch norm, in-place skip sums) compute the same numbers as the plain formulations; the switch
# exists so tests and benchmarks/search_step.py can run both side by side in one process.
_optimised = True


def optimised_ops_enabled() -> bool:
    return _optimised


@contextlib.contextmanager
def optimised_ops(enabled: bool) -> Iterator[None]:
    """Within the block, the spaces run their plain (``False``) or optimised (``True``) step."""
    global _optimised
    before, _optimised = _optimised, bool(enabled)
    try:
        yield
    finally:
        _optimised = before


def relu_of_temporary(x: torch.Tensor) -> torch.Tensor:
    """ReLU of a tensor nothing else reads (a batch-norm or concatenation output), in place when
    optimised: neither op's backward reads its output, so the buffer can be reused (one
    activation-sized allocation less per block)."""
    return F.relu_(x) if _optimised else F.relu(x)


def add_all(first: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    """``first + sum(others)``. Optimised: one new tensor, the rest added in place (an addition's
    backward needs none of its inputs, so the running sum may be overwritten); plain: one per term."""
    if not others:
        return first
    if not _optimised:
        for t in others:
            first = first + t
        return first
    out = first + others[0]
    for t in others[1:]:
        out.add_(t)
    return out


class _SubsamplePair(torch.autograd.Function):
    """``(x[..., ::2, ::2], x shifted by one pixel[..., ::2, ::2])`` with a one-pass backward.

    The shifted grid is ``x[..., 1::2, 1::2]`` zero-padded at the bottom/right to ``ceil(H/2) x
    ceil(W/2)``. Autograd through the slices instead allocates and zero-fills a full-size gradient per
    slice and pad (six for the two paths) and adds them; this writes both into one zeroed buffer."""

    @staticmethod
    def forward(ctx, x: torch.Tensor):
        h, w = x.shape[-2:]
        ctx.input_shape, ctx.h, ctx.w = x.shape, h, w
        ctx.channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        even = x[:, :, ::2, ::2]
        odd = F.pad(x[:, :, 1::2, 1::2], (0, w % 2, 0, h % 2))
        return even, odd

    @staticmethod
    def backward(ctx, g_even: torch.Tensor, g_odd: torch.Tensor):
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        grad = torch.empty(ctx.input_shape, dtype=g_even.dtype, device=g_even.device, memory_format=fmt)
        grad.zero_()
        grad[:, :, ::2, ::2] = g_even
        grad[:, :, 1::2, 1::2] = g_odd[:, :, : ctx.h // 2, : ctx.w // 2]
        return grad


def subsample_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two stride-2 grids of the factorized reduction: even pixels and the one-pixel-shifted ones."""
    if _optimised and torch.is_grad_enabled() and x.requires_grad:
        return _SubsamplePair.apply(x)
    shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
    return x[:, :, ::2, ::2], shifted[:, :, ::2, ::2]


def conv2d(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free 'same' conv: padding k//2, so stride 2 gives ceil(size/2) for odd and even sizes."""
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)


class ConvBN(nn.Sequential):
    """conv -> BN (the stem: the reference has no ReLU after it)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__(conv2d(c_in, c_out, kernel, stride), nn.BatchNorm2d(c_out, affine=affine))


class ConvBNReLU(nn.Sequential):
    """conv -> BN -> ReLU (the order of the reference's search-network branches)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__(conv2d(c_in, c_out, kernel, stride), nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_of_temporary(self[1](self[0](x)))


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN (the order of the reference's fixed networks)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False), conv2d(c_in, c_out, kernel, stride), nn.BatchNorm2d(c_out, affine=affine)
        )


class SeparableConv2d(nn.Sequential):
    """A true depthwise-separable conv: depthwise kxk (groups = C_in) then pointwise 1x1, no bias."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(conv2d(c_in, c_in, kernel, stride, groups=c_in), conv2d(c_in, c_out, 1))

    @property
    def depthwise(self) -> nn.Conv2d:
        return self[0]

    @property
    def pointwise(self) -> nn.Conv2d:
        return self[1]


class ReLUSepConvBN(nn.Sequential):
    """ReLU -> depthwise kxk -> pointwise 1x1 -> BN: one separable block."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            SeparableConv2d(c_in, c_out, kernel, stride),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """The micro space's sep-conv op: two stacked ReLU -> depthwise -> pointwise -> BN blocks.

    The stride is applied in the first block, which keeps ``C_in`` channels; the second maps to ``C_out``
    (as in the reference and DARTS)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__(
            ReLUSepConvBN(c_in, c_in, kernel, stride, affine), ReLUSepConvBN(c_in, c_out, kernel, 1, affine)
        )


class Pool(nn.Module):
    """3x3 average or max pooling with padding 1 ('same' at stride 1, ceil(size/2) at stride 2).

    Average pooling ignores the padding (``count_include_pad=False``), like TensorFlow's 'SAME' pooling in
    the reference, so border values are not pulled towards zero."""

    def __init__(self, kind: str, stride: int = 1, kernel: int = 3):
        super().__init__()
        if kind not in ("avg", "max"):
            raise ValueError(f"pool kind must be 'avg' or 'max', not {kind!r}")
        self.kind, self.stride, self.kernel = kind, stride, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel // 2
        if self.kind == "avg":
            return F.avg_pool2d(x, self.kernel, self.stride, pad, count_include_pad=False)
        return F.max_pool2d(x, self.kernel, self.stride, pad)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, kernel={self.kernel}, stride={self.stride}"


class FactorizedReduction(nn.Module):
    """Halves height and width (to ceil(H/2) x ceil(W/2)) and maps ``C_in`` to ``C_out`` channels.

    Path 1 subsamples by 2 and applies a 1x1 conv to ``C_out // 2`` channels; path 2 shifts the input by
    one pixel (crop the top row / left column, pad zeros at the bottom / right), subsamples and applies
    its own 1x1 conv to the remaining channels; the two are concatenated and batch-normalised.
    The subsampling is an explicit strided slice before a stride-1 1x1 conv: a 1x1 conv with stride 2 in
    channels_last corrupts the heap in its CPU backward pass on torch 2.13 at inputs of 64x64 and larger
    (tests/test_ops_channels_last.py keeps this honest).
    The shifted input keeps the size of the input, so both paths give the same, ceil-rounded size for odd
    heights and widths (the reference assumed even, square inputs)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out < 2:
            raise ValueError(f"factorized reduction needs at least 2 output channels, got {c_out}")
        half = c_out // 2
        self.path1 = nn.Conv2d(c_in, half, 1, bias=False)
        self.path2 = nn.Conv2d(c_in, c_out - half, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        even, shifted = subsample_pair(x)
        return self.bn(torch.cat([self.path1(even), self.path2(shifted)], dim=1))


class ReLUFactorizedReduction(nn.Sequential):
    """ReLU -> factorized reduction (the micro space's calibration of an older, larger cell input)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False), FactorizedReduction(c_in, c_out, affine))


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


HEAD_POOLS = ("avg", "avg_std")


class GlobalAvgPoolHead(nn.Module):
    """Average pool -> dropout -> bias-free linear (the reference's classifier head).

    ``bands`` 1 is the reference's global average pool. With ``bands`` > 1 time is averaged away but the
    frequency axis is pooled into that many bands, each band's channels feeding the classifier on its
    own: a spectrogram's rows are not interchangeable (where in frequency energy sits is much of what
    tells one soundtrack from another, and what a linear model on per-band statistics uses), while a
    global pool keeps only what a feature looks like, not at which pitch range it fired.

    ``pool`` "avg_std" adds each channel's standard deviation over time (of its band average) beside the
    mean ("statistics pooling", as speaker and language embeddings do): how much a feature varies through
    the clip, which a mean hides and which the log-mel floor's per-band std and delta features carry."""

    def __init__(self, c_in: int, num_classes: int, dropout: float = 0.0, relu: bool = False, bands: int = 1,
                 pool: str = "avg"):  # fmt: skip
        super().__init__()
        if pool not in HEAD_POOLS:
            raise ValueError(f"head pool must be one of {HEAD_POOLS}, got {pool!r}")
        self.relu = relu
        self.bands = int(bands)
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        stats = 2 if pool == "avg_std" else 1
        self.linear = nn.Linear(c_in * self.bands * stats, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu:
            x = F.relu(x)
        if self.pool == "avg":
            x = torch.flatten(F.adaptive_avg_pool2d(x, (self.bands, 1)), 1)
        else:
            per_frame = F.adaptive_avg_pool2d(x, (self.bands, x.shape[-1]))  # [B, C, bands, T]
            mean = per_frame.mean(-1)
            std = (per_frame - mean.unsqueeze(-1)).square().mean(-1).add(1e-5).sqrt()
            x = torch.cat([torch.flatten(mean, 1), torch.flatten(std, 1)], 1)
        return self.linear(self.dropout(x))


def _identity_or_reduce(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return Identity()
    if stride == 1:
        return ReLUConvBN(c_in, c_out, 1)
    return ReLUFactorizedReduction(c_in, c_out)


def _pool_op(kind: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    if c_in != c_out:  # pooling cannot change channels; a 1x1 conv calibrates them first
        return nn.Sequential(ReLUConvBN(c_in, c_out, 1), Pool(kind, stride))
    return Pool(kind, stride)


# op name -> factory(C_in, C_out, stride)
OPS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "conv_3x3": lambda c_in, c_out, stride: ReLUConvBN(c_in, c_out, 3, stride),
    "conv_5x5": lambda c_in, c_out, stride: ReLUConvBN(c_in, c_out, 5, stride),
    "sep_conv_3x3": lambda c_in, c_out, stride: SepConv(c_in, c_out, 3, stride),
    "sep_conv_5x5": lambda c_in, c_out, stride: SepConv(c_in, c_out, 5, stride),
    "avg_pool_3x3": lambda c_in, c_out, stride: _pool_op("avg", c_in, c_out, stride),
    "max_pool_3x3": lambda c_in, c_out, stride: _pool_op("max", c_in, c_out, stride),
    "identity": _identity_or_reduce,
}


def reduced_size(size: int, times: int = 1) -> int:
    """Height or width after ``times`` stride-2 reductions (ceil rounding)."""
    for _ in range(times):
        size = (size + 1) // 2
    return size
