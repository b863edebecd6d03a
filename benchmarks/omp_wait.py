"""OpenMP wait policy on a shared CPU: training-step time of the demo's macro network with the default
(active, spinning) and the passive policy, on idle cores and with one competing busy process, measured
side by side in one run. The policy is read at process start, so each measurement is a child process.

    MUSICNAS_NO_REEXEC=1 .venv/bin/python benchmarks/omp_wait.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

STEP = textwrap.dedent(
    """
    import time, torch
    from musicnas.spaces.macro import FixedNet, MacroSpace
    torch.manual_seed(0)
    torch.set_num_threads(2)
    net = FixedNet(MacroSpace(num_layers=6, channels=24, stem_stride=2).sample(0), num_classes=8)
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(32, 1, 64, 94).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 8, (32,))
    times = []
    for _ in range(12):
        t = time.perf_counter()
        opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
        times.append(time.perf_counter() - t)
    times = sorted(times[2:])
    print(times[len(times) // 2])
    """
)
BUSY = "import time\nend = time.time() + 600\nwhile time.time() < end: pass\n"


def median_step(policy: str) -> float:
    env = dict(os.environ, OMP_WAIT_POLICY=policy, MUSICNAS_NO_REEXEC="1")
    out = subprocess.run([sys.executable, "-c", STEP], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"{'load':<22}{'ACTIVE ms':>10}{'PASSIVE ms':>12}{'active/passive':>16}")
    for label, busy in (("idle", False), ("one busy process", True)):
        hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
        try:
            active, passive = median_step("ACTIVE"), median_step("PASSIVE")
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        print(f"{label:<22}{active * 1e3:>10.0f}{passive * 1e3:>12.0f}{active / passive:>16.2f}")


if __name__ == "__main__":
    main()
