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


# ----- recomputed activations -------------------------------------------------------------------------
# Autograd keeps every tensor a backward formula reads until the backward runs. In a conv -> BN -> ReLU ->
# conv chain it keeps the BN input (for the BN backward) *and* the BN/ReLU output (for the next conv's
# weight gradient and the ReLU mask), although the second is one elementwise pass away from the first
# and the batch statistics. Inside recompute_activations(), batch_norm() marks its output with a recipe
# (input, batch mean, inverse std, weight, bias, ReLU or not) and a saved-tensor hook stores the recipe
# instead of the tensor, so each such output lives only as long as the forward pass needs it and is
# rebuilt, one at a time, when a backward formula asks for it. Batch statistics are not recomputed and the
# running statistics are updated once, in the forward (unlike torch.utils.checkpoint of a branch).
_recompute_active = False
_recompute_allowed = True


@contextlib.contextmanager
def recompute_allowed(enabled: bool) -> Iterator[None]:
    """Within the block, recompute_activations() does (``True``) or does not (``False``) rebuild saved
    activations (for A/B measurements; the rest of the optimised step is unchanged)."""
    global _recompute_allowed
    before, _recompute_allowed = _recompute_allowed, bool(enabled)
    try:
        yield
    finally:
        _recompute_allowed = before


class _Recipe:
    """How to rebuild a saved tensor: ``fn(*args)``, args packed like saved tensors (nested recipes)."""

    __slots__ = ("fn", "args", "version")

    def __init__(self, fn: Callable, args: tuple, version: int):
        self.fn, self.args, self.version = fn, args, version

    def build(self) -> torch.Tensor:
        with torch.no_grad():
            return self.fn(*(_unpack(a) if isinstance(a, (_Recipe, _Kept)) else a for a in self.args))


class _Kept:
    """A tensor saved as is, with its version: hooks bypass autograd's in-place check, so we keep it."""

    __slots__ = ("tensor", "version")

    def __init__(self, tensor: torch.Tensor):
        self.tensor, self.version = tensor, tensor._version


def _pack(t: torch.Tensor):
    recipe = getattr(t, "_musicnas_recipe", None)
    if recipe is not None and recipe.version == t._version:
        return recipe
    return _Kept(t)


def _unpack(packed):
    if isinstance(packed, _Recipe):
        return packed.build()
    if packed.tensor._version != packed.version:
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace "
            f"operation: a tensor of shape {tuple(packed.tensor.shape)} is at version "
            f"{packed.tensor._version}; expected version {packed.version} instead"
        )
    return packed.tensor


def recomputable(out: torch.Tensor, fn: Callable, *args) -> torch.Tensor:
    """Marks ``out`` (== ``fn(*args)``) to be rebuilt instead of kept when a backward formula saves it;
    a no-op outside recompute_activations()."""
    if _recompute_active:
        packed = tuple(_pack(a) if isinstance(a, torch.Tensor) else a for a in args)
        out._musicnas_recipe = _Recipe(fn, packed, out._version)
    return out


def recompute_active() -> bool:
    return _recompute_active


@contextlib.contextmanager
def recompute_activations() -> Iterator[None]:
    """Within the block (a training forward pass), outputs marked by :func:`recomputable` are rebuilt in
    the backward instead of kept. Off in the plain step, without grad, and under autocast (the recipes
    would recompute in the wrong dtype); nested blocks are one block."""
    global _recompute_active
    autocast = any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda"))
    if _recompute_active or not (_optimised and _recompute_allowed and torch.is_grad_enabled()) or autocast:
        yield
        return
    _recompute_active = True
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield
    finally:
        _recompute_active = False


def _channel_view(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def _batch_norm_apply(x, mean, invstd, weight, bias, relu: bool) -> torch.Tensor:
    """The train-mode batch norm of ``x`` with given batch statistics (then ReLU): the recipe."""
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    out = torch.addcmul(_channel_view(shift), x, _channel_view(scale))
    return out.relu_() if relu else out


class _BatchNormReLU(torch.autograd.Function):
    """Train-mode batch norm then ReLU that keeps only the BN input for its backward (the ReLU mask is
    rebuilt from it), where BN + ReLU keep the input and the output."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        out, mean, invstd = torch.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )
        out.relu_()
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, invstd)
        return out, mean, invstd

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_invstd):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        pre_relu = _batch_norm_apply(x, mean, invstd, weight, bias, relu=False)
        grad_bn = torch.ops.aten.threshold_backward(grad_out, pre_relu, 0)
        del pre_relu
        mask = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1]]
        mask.append(bias is not None and ctx.needs_input_grad[2])
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad_bn, x, weight, None, None, mean, invstd, True, ctx.eps, mask
        )
        return gx, gw, gb, None, None, None, None


def _momentum_factor(bn: nn.modules.batchnorm._BatchNorm) -> float:
    """What nn.BatchNorm's forward passes as momentum (counting the batch as it does)."""
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            return 1.0 / float(bn.num_batches_tracked)
    return 0.0 if bn.momentum is None else bn.momentum


_PLAIN_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batch_norm(
    bn: nn.modules.batchnorm._BatchNorm,
    x: torch.Tensor,
    relu: bool = False,
    channels: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``bn(x)``, then ReLU if ``relu``, over channels ``[start, stop)`` of ``bn`` when given (the
    reference's batch_norm_with_mask: the running statistics are slices (views) of the module's buffers,
    updated in place, so training a slice updates exactly those channels). Inside
    recompute_activations() the output is rebuilt from the input for the backward instead of kept."""

    def part(t):
        return t if t is None or channels is None else t[channels[0] : channels[1]]

    if channels is None and type(bn) not in _PLAIN_BATCH_NORMS:
        # another batch norm (distributed.SyncedBatchNorm normalises with the global batch's statistics
        # under torchrun): its own forward, or two processes would no longer compute what one does
        out = bn(x)
        return relu_of_temporary(out) if relu else out
    use_batch = bn.training or bn.running_mean is None
    momentum = _momentum_factor(bn)
    weight, bias, mean, var = part(bn.weight), part(bn.bias), part(bn.running_mean), part(bn.running_var)
    if not (_recompute_active and use_batch and torch.is_grad_enabled()):
        out = F.batch_norm(x, mean, var, weight, bias, use_batch, momentum, bn.eps)
        return relu_of_temporary(out) if relu else out
    if relu:
        out, b_mean, b_invstd = _BatchNormReLU.apply(x, weight, bias, mean, var, momentum, bn.eps)
    else:
        out, b_mean, b_invstd = torch.native_batch_norm(x, weight, bias, mean, var, True, momentum, bn.eps)
    detached = [None if t is None else t.detach() for t in (weight, bias)]
    return recomputable(out, _batch_norm_apply, x, b_mean.detach(), b_invstd.detach(), *detached, relu)


class _MaxPoolRecomputeIndices(torch.autograd.Function):
    """Max pooling that keeps only its input (itself usually a recipe) and finds the argmax again in the
    backward: the int64 indices it would keep are twice the size of a float32 activation."""

    @staticmethod
    def forward(ctx, x, kernel: int, stride: int, padding: int):
        ctx.save_for_backward(x)
        ctx.args = ([kernel] * 2, [stride] * 2, [padding] * 2)
        return F.max_pool2d(x, kernel, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        kernel, stride, padding = ctx.args
        _, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, padding)
        grad = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out, x, kernel, stride, padding, [1, 1], False, indices
        )
        return grad, None, None, None


def _even_grid(x: torch.Tensor) -> torch.Tensor:
    # a copy, not a view: the 1x1 conv keeps its input for the backward, and a strided view would keep
    # the whole (4x larger) input alive with it
    fmt = (
        torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    )
    return x[:, :, ::2, ::2].contiguous(memory_format=fmt)


def _shifted_grid(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x[:, :, 1::2, 1::2], (0, w % 2, 0, h % 2))


def _normalised_even_grid(x: torch.Tensor, *bn_args) -> torch.Tensor:
    """``_even_grid(_batch_norm_apply(x, *bn_args))`` at a quarter of the work (the op is per pixel)."""
    fmt = (
        torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    )
    return _batch_norm_apply(x[:, :, ::2, ::2], *bn_args).contiguous(memory_format=fmt)


def _normalised_shifted_grid(x: torch.Tensor, *bn_args) -> torch.Tensor:
    """``_shifted_grid(_batch_norm_apply(x, *bn_args))``: normalise the odd pixels, then pad the zeros."""
    h, w = x.shape[-2:]
    return F.pad(_batch_norm_apply(x[:, :, 1::2, 1::2], *bn_args), (0, w % 2, 0, h % 2))


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
        return _even_grid(x), _shifted_grid(x)

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
        even, shifted = _SubsamplePair.apply(x)
        packed = _pack(x)
        if isinstance(packed, _Recipe) and packed.fn is _batch_norm_apply:
            # the 1x1 convs keep these quarter-size grids; rebuilt from x's batch-norm input, only the
            # pixels of each grid are normalised again
            for grid, fn in ((even, _normalised_even_grid), (shifted, _normalised_shifted_grid)):
                grid._musicnas_recipe = _Recipe(fn, packed.args, grid._version)
        elif isinstance(packed, _Recipe):  # a kept x would be pinned whole by the recipes
            recomputable(even, _even_grid, x)
            recomputable(shifted, _shifted_grid, x)
        return even, shifted
    shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
    return x[:, :, ::2, ::2], shifted[:, :, ::2, ::2]


class _ConvWeightGradNCHW(torch.autograd.Function):
    """A dense kxk convolution whose weight gradient is computed on NCHW copies of the input and the
    output gradient. On this CPU (oneDNN, AVX2, torch 2.13) the weight gradient of a channels_last 3x3 or
    5x5 convolution with 36 channels takes 2.1-3x as long as the same computation in NCHW, while the
    forward and the input gradient are faster in channels_last (benchmarks/conv_formats.py); the two
    copies cost one memory pass each."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.conv = ([stride] * 2 if isinstance(stride, int) else list(stride), list(padding))
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.conv
        grad_x = grad_w = None
        # the weight gradient first: its two copies are freed before the input gradient is allocated
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad_out.contiguous(), x.contiguous(), weight.contiguous(), None, stride, padding, [1, 1],
                False, [0, 0], 1, [False, True, False],
            )[1]  # fmt: skip
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, stride, padding, [1, 1], False, [0, 0], 1, [True, False, False]
            )[0]
        return grad_x, grad_w, None, None


def dense_conv2d(x: torch.Tensor, weight: torch.Tensor, stride=1, padding=0) -> torch.Tensor:
    """``F.conv2d(x, weight, None, stride, padding)`` (no groups, no bias); in the optimised training
    step of a channels_last kxk conv on CPU, with the weight gradient computed in NCHW."""
    if (
        _optimised
        and weight.shape[-1] > 1
        and torch.is_grad_enabled()
        and weight.requires_grad
        and x.device.type == "cpu"
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.is_autocast_enabled("cpu")
    ):
        pad = [padding] * 2 if isinstance(padding, int) else list(padding)
        return _ConvWeightGradNCHW.apply(x, weight, stride, pad)
    return F.conv2d(x, weight, None, stride, padding)


class Conv2d(nn.Conv2d):
    """nn.Conv2d whose bias-free, ungrouped kxk training step goes through :func:`dense_conv2d`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.training
            and self.bias is None
            and self.groups == 1
            and self.padding_mode == "zeros"
            and self.dilation == (1, 1)
        ):
            return dense_conv2d(x, self.weight, self.stride, self.padding)
        return super().forward(x)


def conv2d(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free 'same' conv: padding k//2, so stride 2 gives ceil(size/2) for odd and even sizes."""
    return Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)


class ConvBN(nn.Sequential):
    """conv -> BN (the stem: the reference has no ReLU after it)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__(conv2d(c_in, c_out, kernel, stride), nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm(self[1], self[0](x))


class ConvBNReLU(nn.Sequential):
    """conv -> BN -> ReLU (the order of the reference's search-network branches)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__(conv2d(c_in, c_out, kernel, stride), nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm(self[1], self[0](x), relu=True)


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
        if _recompute_active and torch.is_grad_enabled() and x.requires_grad:
            return _MaxPoolRecomputeIndices.apply(x, self.kernel, self.stride, pad)
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
        return batch_norm(self.bn, torch.cat([self.path1(even), self.path2(shifted)], dim=1))


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
