"""Micro search network, fixed network and sub-network extraction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicnas.runtime import MusicnasError
from musicnas.spaces.cost import count_cost
from musicnas.spaces.micro import FixedNet, MicroArch, MicroSpace, SearchNet, extract_subnet
from musicnas.spaces.micro.fixed_net import FixedMicroNet
from musicnas.spaces.micro.search_net import stride_for
from musicnas.spaces.ops import reduced_size

tiny_spaces = st.builds(
    MicroSpace, num_cells=st.integers(1, 3), num_nodes=st.integers(1, 3), channels=st.sampled_from([2, 4])
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets run fastest on one thread, and the test machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


net_settings = settings(deadline=None, max_examples=8, suppress_health_check=[HealthCheck.too_slow])


def cell_output_shapes(net, x, *args):
    """Shapes of every cell's output, recorded with forward hooks."""
    shapes = []
    hooks = [
        cell.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape))) for cell in net.cells
    ]
    try:
        out = net(x, *args)
    finally:
        for hook in hooks:
            hook.remove()
    return out, shapes


@net_settings
@given(space=tiny_spaces, h=st.integers(3, 21), w=st.integers(3, 27), seed=st.integers(0, 2**16))
def test_search_net_shapes_forward_backward(space, h, w, seed):
    net = SearchNet(space, in_channels=1, num_classes=3)
    arch = space.sample(seed)
    x = torch.randn(2, 1, h, w)
    logits, shapes = cell_output_shapes(net, x, arch)
    assert logits.shape == (2, 3)
    reductions = 0
    for plan, shape in zip(net.plans, shapes, strict=True):
        reductions += plan.reduction
        assert shape == (2, plan.channels, reduced_size(h, reductions), reduced_size(w, reductions))
    logits.sum().backward()
    assert net.stem[0].weight.grad is not None and torch.isfinite(net.stem[0].weight.grad).all()


@net_settings
@given(space=tiny_spaces, h=st.integers(3, 21), w=st.integers(3, 27), seed=st.integers(0, 2**16))
def test_fixed_net_shapes_forward_backward(space, h, w, seed):
    arch = space.sample(seed)
    net = FixedNet(arch, in_channels=1, num_classes=3, aux_hidden=8, aux_width=16)
    net.set_progress(0.5)
    x = torch.randn(2, 1, h, w)
    logits, shapes = cell_output_shapes(net, x)
    assert logits.shape == (2, 3)
    reductions = 0
    for plan, shape in zip(net.plans, shapes, strict=True):
        reductions += plan.reduction
        cell_arch = arch.reduction if plan.reduction else arch.normal
        # the fixed cell outputs the concatenation of its unused tensors, C channels each
        width = plan.channels * len(MicroArch.unused(cell_arch))
        assert shape == (2, width, reduced_size(h, reductions), reduced_size(w, reductions))
    logits, aux = net.forward_train(x)
    assert aux.shape == (2, 3)
    (
        F.cross_entropy(logits, torch.tensor([0, 1]))
        + net.aux_weight * F.cross_entropy(aux, torch.tensor([2, 0]))
    ).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.aux_head.parameters())


def test_default_nets_run_on_a_default_spectrogram():
    space = MicroSpace()
    assert (space.num_cells, space.num_nodes, space.channels) == (2, 5, 16)
    x = torch.randn(2, 1, 64, 94)
    arch = space.sample(1)
    assert SearchNet(space, num_classes=8)(x, arch).shape == (2, 8)
    assert FixedNet(arch, num_classes=8)(x).shape == (2, 8)


def used_op_modules(net, arch):
    """(cell, node, slot, stride key, op) of every op module ``arch`` runs in ``net``."""
    used = set()
    for c, plan in enumerate(net.plans):
        cell = arch.reduction if plan.reduction else arch.normal
        for j, (i1, o1, i2, o2) in enumerate(cell):
            for slot, (index, op) in enumerate(((i1, o1), (i2, o2))):
                used.add((c, j, slot, f"stride{stride_for(plan.reduction, index)}", op))
    return used


def op_modules(net):
    for c, cell in enumerate(net.cells):
        for j, slots in enumerate(cell.ops):
            for slot, strides in enumerate(slots):
                for key, ops in strides.items():
                    for op, module in enumerate(ops):
                        yield (c, j, slot, key, op), module


def test_weight_sharing_only_sampled_ops_get_gradients():
    space = MicroSpace(num_cells=1, num_nodes=3, channels=4)
    net = SearchNet(space, num_classes=3)
    params_before = {name: id(p) for name, p in net.named_parameters()}
    buffers_before = {name: id(b) for name, b in net.named_buffers()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 12, 15)
    for _ in range(3):
        arch = space.sample(g)
        net.zero_grad(set_to_none=True)
        net(x, arch).sum().backward()
        used = used_op_modules(net, arch)
        with_params = 0
        for key, module in op_modules(net):
            params = list(module.parameters())
            with_params += bool(params)
            for p in params:
                assert (p.grad is not None) == (key in used), key
        assert with_params > len(used)  # most weighted ops sit idle in any one architecture
    # forward passes create no parameters or buffers: every architecture runs on the same objects
    assert {name: id(p) for name, p in net.named_parameters()} == params_before
    assert {name: id(b) for name, b in net.named_buffers()} == buffers_before


def test_two_architectures_share_the_module_of_a_common_choice():
    space = MicroSpace(num_cells=1, num_nodes=2, channels=4)
    net = SearchNet(space, num_classes=3)
    a = MicroArch.from_flat([0, 0, 1, 3, 2, 1, 0, 4] + [1, 0, 0, 1, 2, 0, 1, 2], space)
    b = MicroArch.from_flat([0, 0, 1, 1, 1, 1, 0, 4] + [1, 0, 0, 0, 2, 0, 1, 2], space)
    normal_cell = net.cells[2]  # N=1: cells are reduction, reduction, normal
    assert not net.plans[2].reduction
    prog_a, prog_b = normal_cell.program(a.normal), normal_cell.program(b.normal)
    assert prog_a.nodes[0][1] is prog_b.nodes[0][1]  # node 0 slot 0: sep-conv3x3 on input 0 in both
    assert prog_a.nodes[0][3] is not prog_b.nodes[0][3]  # max-pool vs sep-conv5x5
    # the same op on a different input of the same (node, slot) is the same weights
    assert (
        prog_a.nodes[1][1]
        is normal_cell.program(MicroArch.from_flat([0, 0, 1, 3, 0, 1, 0, 4] * 2, space).normal).nodes[1][1]
    )


def test_combine_uses_the_rows_of_the_unused_tensors():
    space = MicroSpace(num_cells=1, num_nodes=2, channels=4)
    net = SearchNet(space, num_classes=3)
    arch = MicroArch.from_flat([0, 0, 0, 1, 2, 2, 2, 3] * 2, space)  # only input 1 and node 1 are unused
    net.zero_grad()
    net(torch.randn(2, 1, 9, 11), arch).sum().backward()
    grad = net.cells[1].combine_weight.grad[:, :, 0, 0]
    c = net.plans[1].channels
    row_used = [bool(grad[:, i * c : (i + 1) * c].abs().sum() > 0) for i in range(4)]
    assert row_used == [False, True, False, True]


def test_extracted_subnet_equals_search_net_in_eval_mode():
    space = MicroSpace(num_cells=2, num_nodes=3, channels=4)
    net = SearchNet(space, num_classes=5)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 17, 23)
    # a few training steps so weights and BN running statistics are not at their initial values
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x, space.sample(g)), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    net.eval()
    for _ in range(3):
        arch = space.sample(g)
        sub = extract_subnet(net, arch)
        assert not sub.training
        with torch.no_grad():
            torch.testing.assert_close(sub(x), net(x, arch), rtol=1e-5, atol=1e-6)
        n_sub = sum(p.numel() for p in sub.parameters())
        assert 0 < n_sub < sum(p.numel() for p in net.parameters())
        # a standalone copy: changing it leaves the search network alone
        search_ids = {id(p) for p in net.parameters()}
        assert not any(id(p) in search_ids for p in sub.parameters())


def test_search_net_rejects_foreign_architectures():
    net = SearchNet(MicroSpace(num_nodes=2, channels=4), num_classes=3)
    other = MicroSpace(num_nodes=3).sample(0)
    with pytest.raises(MusicnasError, match="3 nodes per cell but this search network has 2"):
        net(torch.randn(1, 1, 8, 8), other)
    with pytest.raises(MusicnasError, match="micro architectures"):
        net(torch.randn(1, 1, 8, 8), [0, 0, 1, 0])


def test_fixed_net_drop_path_schedule_and_aux_head():
    space = MicroSpace(num_cells=2, num_nodes=2, channels=4)
    # convs everywhere, so drop-path has something to drop in every node
    arch = MicroArch.from_flat([0, 0, 1, 1, 2, 0, 0, 1] * 2, space)
    net = FixedNet(arch, num_classes=3, dropout=0.0, aux_hidden=8, aux_width=16)
    assert net.aux_weight == pytest.approx(0.4)
    assert net.keep_prob(len(net.cells) - 1) == 1.0  # progress 0: nothing dropped yet
    net.set_progress(1.0)
    keeps = [net.keep_prob(i) for i in range(len(net.cells))]
    assert keeps == sorted(keeps, reverse=True) and keeps[-1] == pytest.approx(0.6)
    with pytest.raises(MusicnasError, match="progress"):
        net.set_progress(1.5)
    x = torch.randn(8, 1, 12, 13)
    net.train()
    torch.manual_seed(0)
    first, second = net(x), net(x)
    assert not torch.allclose(first, second)  # paths dropped at random in training
    net.set_progress(0.0)
    torch.testing.assert_close(net(x), net(x))  # batch statistics alone are deterministic
    net.eval()
    net.set_progress(1.0)
    torch.testing.assert_close(net(x), net(x))  # never dropped in eval mode
    assert net.forward_train(x)[1].shape == (8, 3)
    no_aux = FixedNet(arch, num_classes=3, aux_weight=0.0)
    assert no_aux.aux_head is None and no_aux.forward_train(x)[1] is None and no_aux.aux_weight == 0.0
    # the aux head reads the second reduction cell
    assert net.aux_index == space.reduction_cells[1]


def test_cost_of_search_net_equals_its_subnet():
    from musicnas.spaces.cost import count_cost

    space = MicroSpace(num_cells=1, num_nodes=3, channels=4)
    net = SearchNet(space, num_classes=5)
    g = torch.Generator().manual_seed(2)
    total = sum(p.numel() for p in net.parameters())
    macs = set()
    for _ in range(3):
        arch = space.sample(g)
        cost = count_cost(net, (1, 13, 18), arch)
        sub_cost = count_cost(extract_subnet(net, arch), (1, 13, 18))
        # only the sampled ops run: the search net does exactly the sub-network's work
        assert cost == sub_cost
        assert cost.params < total
        macs.add(cost.macs)
    assert len(macs) > 1


# The authors' published CIFAR-10 micro cells (scripts/cifar10_micro_final.sh), normal then reduction,
# in their node order [index_1, op_1, index_2, op_2] (the same as ours) and op ids (the same as ours).
AUTHORS_MICRO_ARC = [int(v) for v in ["0", "2", "0", "0", "0", "4", "0", "1", "0", "4", "1", "1", "1", "0", "0", "1", "0", "2", "1", "1", "1", "0", "1", "0", "0", "3", "0", "2", "1", "1", "3", "1", "1", "0", "0", "4", "0", "3", "1", "1"]]  # fmt: skip


@pytest.mark.parametrize("layer_base,expected", [(True, 3_894_372), (False, 3_729_420)])
def test_authors_published_micro_architecture_parameter_count(layer_base, expected):
    """--cells 15 --nodes 5 --channels 36, 3x32x32, 10 classes, aux head left out (as the authors counted).

    3,894,372 is "Model has N params" of their micro_child.py for this arc (re-derived shape by shape from
    their code); it needs their layer_base conv. The whole gap to our cell is those 17 ReLU-conv1x1-BN
    layers: 5 (36² + 72) + 5 (72² + 144) + 5 (144² + 288) + (72² + 144) + (144² + 288) = 164,952."""
    space = MicroSpace(num_cells=15, num_nodes=5, channels=36, layer_base=layer_base)
    arch = MicroArch.from_flat(AUTHORS_MICRO_ARC, space)
    net = FixedMicroNet(arch, in_channels=3, num_classes=10)
    assert count_cost(net, (3, 32, 32)).params == expected
    assert 3_894_372 - 3_729_420 == 164_952


def test_layer_base_round_trips_and_old_records_keep_their_meaning():
    space = MicroSpace(num_cells=2, num_nodes=3, channels=8, layer_base=True)
    arch = space.sample(0)
    again = MicroArch.from_json(arch.to_json())
    assert again == arch and again.space.layer_base and "-LB" in again.key()
    plain = MicroSpace(num_cells=2, num_nodes=3, channels=8)
    assert "layer_base" not in plain.to_dict()  # records written before the option read the same
    assert MicroArch.from_flat(arch.to_flat(), plain).key() != arch.key()
    x = torch.randn(2, 1, 16, 12)
    net = FixedMicroNet(arch, num_classes=3).eval()
    assert net(x).shape == (2, 3)
    with pytest.raises(MusicnasError, match="layer_base"):
        MicroSpace(layer_base=1)
