"""Where the time of a convolution's backward goes in channels_last vs NCHW on this CPU.

Times ``aten.convolution_backward`` for the input gradient and the weight gradient separately, for the
convolutions of the ENAS macro branches (36 channels, 128x128, dense 3x3/5x5, depthwise 5x5, 1x1), in
both memory formats, in one process, alternating. The finding it backs (spaces/ops.py dense_conv2d): the
weight gradient of a dense kxk conv is 2-3x faster from NCHW copies, everything else is faster in
channels_last.

    python benchmarks/conv_formats.py --threads 1 --batch 8
"""

from __future__ import annotations

import statistics
import time

import click


@click.command(help=__doc__)
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads.")
@click.option("--batch", type=int, default=8, show_default=True, help="Batch size of the activations.")
@click.option("--channels", type=int, default=36, show_default=True, help="Input and output channels.")
@click.option("--size", type=int, default=128, show_default=True, help="Height and width.")
@click.option("--repeats", type=int, default=5, show_default=True, help="Timed calls per case (median).")
def main(threads, batch, channels, size, repeats):
    import torch

    torch.set_num_threads(threads)
    c = channels
    formats = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}
    click.echo(f"{'conv':>14} {'format':>14} {'grad_input ms':>14} {'grad_weight ms':>15}")
    for kernel, groups in ((1, 1), (3, 1), (5, 1), (5, c)):
        times = {name: ([], []) for name in formats}
        tensors = {}
        for name, fmt in formats.items():
            x = torch.randn(batch, c, size, size).contiguous(memory_format=fmt)
            w = torch.randn(c, c // groups, kernel, kernel).contiguous(memory_format=fmt)
            g = torch.randn(batch, c, size, size).contiguous(memory_format=fmt)
            tensors[name] = (x, w, g)
        for _ in range(repeats + 1):
            for name, (x, w, g) in tensors.items():
                for i, mask in enumerate(([True, False, False], [False, True, False])):
                    t0 = time.process_time()
                    torch.ops.aten.convolution_backward(
                        g, x, w, None, [1, 1], [kernel // 2] * 2, [1, 1], False, [0, 0], groups, mask
                    )
                    times[name][i].append(time.process_time() - t0)
        for name, (gi, gw) in times.items():
            label = f"{kernel}x{kernel}" + (" depthwise" if groups > 1 else "")
            click.echo(
                f"{label:>14} {name:>14} {statistics.median(gi[1:]) * 1e3:>14.1f} "
                f"{statistics.median(gw[1:]) * 1e3:>15.1f}"
            )


if __name__ == "__main__":
    main()
