"""The factorized reduction in channels_last on CPU: torch 2.13's backward of a stride-2 1x1 conv in
channels_last corrupts the heap at spectrogram sizes, so the reduction subsamples explicitly. These
tests run the training step in a child process (a crash there fails the test instead of killing pytest)
and check the numbers against the reference definition."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch
import torch.nn.functional as F

from musicnas.spaces.ops import FactorizedReduction


def test_factorized_reduction_channels_last_backward_does_not_crash():
    code = textwrap.dedent(
        """
        import torch
        from musicnas.spaces.ops import FactorizedReduction
        torch.set_num_threads(1)
        torch.manual_seed(0)
        red = FactorizedReduction(6, 12).to(memory_format=torch.channels_last)
        for _ in range(20):
            x = torch.randn(8, 6, 64, 94, requires_grad=True).contiguous(memory_format=torch.channels_last)
            y = red(x)
            (y * torch.randn_like(y)).sum().backward()
        print("ok", tuple(y.shape))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok (8, 12, 32, 47)" in proc.stdout


def test_factorized_reduction_matches_reference_definition():
    torch.manual_seed(1)
    red = FactorizedReduction(4, 6).eval()
    x = torch.randn(2, 4, 9, 14)
    # reference: path 1 = subsample -> 1x1 conv; path 2 = shift by one pixel -> subsample -> 1x1 conv
    p1 = F.conv2d(x[:, :, ::2, ::2], red.path1.weight)
    shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
    p2 = F.conv2d(shifted[:, :, ::2, ::2], red.path2.weight)
    expected = red.bn(torch.cat([p1, p2], dim=1))
    out = red(x)
    assert out.shape == (2, 6, 5, 7)
    torch.testing.assert_close(out, expected)
    cl = red(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, expected)
