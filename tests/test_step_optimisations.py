"""The spaces' optimised training step (spaces.ops.optimised_ops) computes what the plain step computes:
same loss, gradients and batch-norm statistics in fp32 on both spaces, search and fixed networks; the
bf16 autocast step stays within bf16 tolerance of the plain fp32 step; the runtime picks bf16 only where
the CPU has it natively and lets the user turn it off."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from musicnas import runtime
from musicnas.runtime import MusicnasError, Runtime
from musicnas.spaces import get_space_module, ops

torch.set_num_threads(1)
CPU = torch.device("cpu")


def small_nets():
    """(label, model, forward args) for each space's search and fixed network, a few architectures."""
    macro = get_space_module("macro")
    micro = get_space_module("micro")
    nets = []
    for whole in (True, False):
        space = macro.Space(num_layers=5, channels=6, num_branches=6, whole_channels=whole)
        for seed in (0, 3):
            arch = space.sample(seed)
            torch.manual_seed(seed)
            nets.append((f"macro-search-whole{whole}-{seed}", macro.SearchNet(space, 1, 4), (arch,)))
    space = macro.Space(num_layers=5, channels=6, num_branches=6)
    torch.manual_seed(1)
    nets.append(("macro-fixed", macro.FixedNet(space.sample(1), 1, 4, dropout=0.0), ()))
    uspace = micro.Space(num_cells=1, num_nodes=3, channels=4)
    for seed in (0, 2):
        torch.manual_seed(seed)
        nets.append((f"micro-search-{seed}", micro.SearchNet(uspace, 1, 4), (uspace.sample(seed),)))
    torch.manual_seed(5)
    nets.append(
        ("micro-fixed", micro.FixedNet(uspace.sample(5), 1, 4, dropout=0.0, drop_path_keep_prob=1.0), ())
    )
    return nets


NETS = small_nets()


def train_step(model, args, x, y, optimised: bool, rt: Runtime):
    """One forward/backward in train mode on a copy; returns loss, gradients and BN buffers."""
    model = copy.deepcopy(model).train().to(memory_format=torch.channels_last)
    x = x.detach().clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    with ops.optimised_ops(optimised), rt.autocast():
        logits = model(x, *args)
        loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    grads["<input>"] = x.grad.detach().clone()
    buffers = {n: b.detach().clone() for n, b in model.named_buffers() if b.dtype.is_floating_point}
    return loss.detach(), grads, buffers


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # odd height and width: the factorized reduction's shifted grid needs its zero row/column
    return torch.randn(6, 1, 13, 11, generator=g), torch.randint(0, 4, (6,), generator=g)


FP32 = Runtime(device=CPU, threads=1, precision="fp32")
BF16 = Runtime(device=CPU, threads=1, precision="bf16")


@pytest.mark.parametrize("label,model,args", NETS, ids=[n[0] for n in NETS])
def test_optimised_fp32_step_equals_plain_step(label, model, args):
    x, y = batch()
    loss_p, grads_p, buf_p = train_step(model, args, x, y, optimised=False, rt=FP32)
    loss_o, grads_o, buf_o = train_step(model, args, x, y, optimised=True, rt=FP32)
    torch.testing.assert_close(loss_o, loss_p, rtol=1e-6, atol=1e-6)
    assert grads_o.keys() == grads_p.keys()
    for name in grads_p:
        torch.testing.assert_close(grads_o[name], grads_p[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in buf_p:
        torch.testing.assert_close(buf_o[name], buf_p[name], rtol=1e-6, atol=1e-7, msg=name)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def flat_grads(grads: dict) -> torch.Tensor:
    return torch.cat([g.flatten() for name, g in grads.items() if name != "<input>"])


@pytest.mark.parametrize("label,model,args", NETS, ids=[n[0] for n in NETS])
def test_optimised_bf16_step_is_within_bf16_tolerance_of_plain_fp32(label, model, args):
    x, y = batch(1)
    loss_p, grads_p, _ = train_step(model, args, x, y, optimised=False, rt=FP32)
    loss_b, grads_b, _ = train_step(model, args, x, y, optimised=True, rt=BF16)
    assert abs(float(loss_b) - float(loss_p)) <= 0.005 * abs(float(loss_p))
    # bf16 keeps 8 mantissa bits; every train-mode batch norm subtracts the gradient's mean, so at
    # initialisation of these tiny nets the whole gradient comes out 9-34% off (measured). The yardstick
    # is the noise SGD already lives with: the fp32 gradient of another minibatch differs by 120-150%.
    x2, y2 = batch(2)
    _, grads_other, _ = train_step(model, args, x2, y2, optimised=False, rt=FP32)
    bf16_error = relative_error(flat_grads(grads_b), flat_grads(grads_p))
    batch_noise = relative_error(flat_grads(grads_other), flat_grads(grads_p))
    assert bf16_error < 0.4 * batch_noise, (bf16_error, batch_noise)
    # no parameter loses its gradient or gets a wrong one (a missing or doubled term is >= 100% off)
    total = float(flat_grads(grads_p).norm())
    for name, g in grads_p.items():
        if name == "<input>":
            continue
        err = float((grads_b[name].float() - g).norm())
        assert err <= 0.75 * (float(g.norm()) + 0.01 * total), (
            f"{name}: |error| {err:.2e}, |g| {g.norm():.2e}"
        )


def test_bf16_runtime_autocasts_convolutions_and_fp32_runtime_does_not():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with BF16.autocast():
        assert F.conv2d(x, w).dtype == torch.bfloat16
    with BF16.autocast(enabled=False):  # TrainConfig.amp=False turns it off
        assert F.conv2d(x, w).dtype == torch.float32
    with FP32.autocast():
        assert F.conv2d(x, w).dtype == torch.float32


def test_subsample_pair_gradient_is_the_slicing_gradient():
    for h, w in ((7, 10), (8, 9)):
        for channels_last in (False, True):
            x = torch.randn(2, 3, h, w)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            g1 = torch.randn(2, 3, (h + 1) // 2, (w + 1) // 2)
            g2 = torch.randn_like(g1)
            grads = []
            for optimised in (False, True):
                xi = x.detach().clone().requires_grad_(True)
                with ops.optimised_ops(optimised):
                    even, odd = ops.subsample_pair(xi)
                assert even.shape == odd.shape == g1.shape
                ((even * g1).sum() + (odd * g2).sum()).backward()
                grads.append(xi.grad)
            torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)
            assert grads[1].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_add_all_in_place_keeps_inputs_and_gradients():
    a, b, c = (torch.randn(3, requires_grad=True) for _ in range(3))
    base = F.relu(a)  # relu saves its output: the sum must not overwrite it
    kept = base.detach().clone()
    out = ops.add_all(base, [b, c])
    torch.testing.assert_close(base, kept)
    out.sum().backward()
    torch.testing.assert_close(b.grad, torch.ones(3))
    torch.testing.assert_close(a.grad, (a > 0).float())


def test_precision_auto_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert runtime.resolve_precision("auto", CPU) == "fp32"
    assert runtime.resolve_precision("bf16", CPU) == "bf16"  # allowed, with a warning
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.resolve_precision("auto", CPU) == "bf16"
    assert runtime.resolve_precision("fp32", CPU) == "fp32"  # the user's way to turn it off
    assert runtime.setup("cpu", 1, "fp32").precision == "fp32"
    with pytest.raises(MusicnasError, match="unknown precision"):
        runtime.resolve_precision("fp8", CPU)


def test_precision_option_reaches_the_runtime():
    import click
    from click.testing import CliRunner

    from musicnas.cli.common import runtime_options

    @click.command()
    @runtime_options
    def show(rt):
        click.echo(rt.precision)

    assert CliRunner().invoke(show, ["--device", "cpu", "--precision", "fp32"]).output.strip() == "fp32"
    bad = CliRunner().invoke(show, ["--precision", "half"])
    assert bad.exit_code != 0 and "half" in bad.output


def test_the_compared_macro_architectures_use_every_branch():
    """The equality tests above exercise every rebuilt activation only if every branch kind appears."""
    ops_used = {
        op for label, _, args in NETS if label.startswith("macro-search-wholeTrue") for op in args[0].ops
    }
    assert ops_used == set(range(6))


def test_optimised_search_step_keeps_no_layer_output_for_the_backward():
    """The layers' outputs are rebuilt from the skip sums in the backward, not kept (the plain step
    keeps each of them for the next layer's 1x1 conv)."""
    import gc
    import weakref

    macro = get_space_module("macro")
    space = macro.Space(num_layers=5, channels=6, num_branches=6, whole_channels=True)
    arch = space.sample(0)
    x = torch.randn(6, 1, 13, 11).contiguous(memory_format=torch.channels_last)
    alive = {}
    for optimised in (False, True):
        torch.manual_seed(0)
        net = macro.SearchNet(space, 1, 4).train().to(memory_format=torch.channels_last)
        refs = []
        for layer in net.layers:
            layer.register_forward_hook(lambda m, i, out, refs=refs: refs.append(weakref.ref(out)))
        with ops.optimised_ops(optimised):
            logits = net(x, arch)
        gc.collect()
        alive[optimised] = [r() is not None for r in refs[:-1]]  # the last one feeds the head
        logits.sum().backward()  # and the graph still runs
    assert all(alive[False]) and not any(alive[True]), alive


def test_recompute_activations_keeps_autograds_in_place_check():
    """Saved-tensor hooks bypass autograd's version check; ours redo it for the tensors they keep."""
    x = torch.randn(4, requires_grad=True)
    with ops.recompute_activations():
        a = x * 2
        b = a.sin()  # keeps a
        a.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        b.sum().backward()


@pytest.mark.parametrize("kernel,stride", [(3, 1), (5, 1), (3, 2)])
def test_dense_conv_weight_gradient_in_nchw_equals_the_plain_one(kernel, stride):
    x = torch.randn(2, 5, 9, 8).contiguous(memory_format=torch.channels_last)
    w = torch.randn(7, 5, kernel, kernel).contiguous(memory_format=torch.channels_last)
    g = torch.randn(2, 5, (9 + stride - 1) // stride, (8 + stride - 1) // stride)
    results = []
    for optimised in (False, True):
        xi, wi = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        with ops.optimised_ops(optimised):
            y = ops.dense_conv2d(xi, wi[1:6], stride, kernel // 2)  # a range of output channels
        (y * g).sum().backward()
        results.append((y.detach(), xi.grad, wi.grad))
        assert y.grad_fn is not None and (type(y.grad_fn).__name__ != "ConvolutionBackward0") == optimised
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_max_pool_recomputing_its_indices_gives_the_plain_gradient():
    x = torch.randn(2, 3, 7, 6).round(decimals=1)  # rounding makes ties, where the argmax choice matters
    pool = ops.Pool("max")
    grads = []
    for optimised in (False, True):
        xi = x.clone().requires_grad_(True)
        with ops.optimised_ops(optimised), ops.recompute_activations():
            y = pool(xi)
        (y * torch.arange(y.numel()).view_as(y)).sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)
