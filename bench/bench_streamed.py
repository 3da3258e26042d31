"""Streamed filtering: a float32 volume over --memory-budget, filtered file to file, against another checkout.

    python bench/bench_streamed.py --before DIR [--side 640] [--budget 256M] [--kernel box:3] [--repeats 5]
                                   [--input vol.npy]

The volume (640^3 float32 = 1 GiB of noise unless ``--input`` names one) is
filtered by ``convcli filter VOL -k KERNEL --memory-budget BUDGET -o out.npy``
from this tree and from ``--before DIR`` (a checkout of an older commit,
``git archive <rev> | tar -x -C DIR``), in turn (A B A B ...), so a drift in
the machine's speed falls on both.  Prints each one's median wall and CPU
seconds and peak resident memory, the median of the pairwise ratios, and
whether the two outputs are bit-identical.  The page cache is warm for both:
the first pair is a warm-up and is not counted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_volume(path: Path, side: int) -> None:
    """A side^3 float32 volume of seeded noise, written slab by slab (real pages, never the whole in memory)."""
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(side,) * 3)
    rng = np.random.default_rng(1)
    for z in range(0, side, 32):
        x[z:z + 32] = rng.standard_normal((min(32, side - z), side, side), dtype=np.float32)
    x.flush()
    del x


def timed(cmd: list[str], tree: str, cwd: str) -> tuple[float, float, int]:
    """Wall and CPU seconds and peak resident bytes of one run of `cmd` with convcli imported from `tree`."""
    # Outside the source tree: `python -m` puts the working directory ahead of PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = tree
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stderr = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{tree}: failed ({os.waitstatus_to_exitcode(status)}): {stderr.strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def identical(a: Path, b: Path) -> bool:
    x, y = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    return all(np.array_equal(x[i:i + 16], y[i:i + 16]) for i in range(0, len(x), 16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="a checkout of convcli to compare with")
    parser.add_argument("--side", type=int, default=640)
    parser.add_argument("--budget", default="256M")
    parser.add_argument("--kernel", default="box:3")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--input", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_streamed.") as tmp:
        tmp = Path(tmp)
        src = args.input or tmp / "volume.npy"
        if args.input is None:
            make_volume(src, args.side)
        trees = {"convcli": str(ROOT), "before": os.path.abspath(args.before)}
        runs = {name: [] for name in trees}
        for repeat in range(args.repeats + 1):
            for name, tree in trees.items():
                cmd = [sys.executable, "-m", "convcli", "filter", str(src), "-k", args.kernel,
                       "--memory-budget", args.budget, "-o", str(tmp / f"{name}.npy")]
                figures = timed(cmd, tree, str(tmp))
                if repeat:
                    runs[name].append(figures)
        size = os.path.getsize(src)
        print(f"{src.name}: {size / 2**30:.2f} GiB, -k {args.kernel}, --memory-budget {args.budget}, "
              f"{args.repeats} pairs after a warm-up")
        for name, rows in runs.items():
            wall, cpu, peak = (statistics.median(column) for column in zip(*rows))
            print(f"  {name:8s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  peak {peak / 2**20:7.0f} MiB")
        ratios = [a[0] / b[0] for a, b in zip(runs["convcli"], runs["before"])]
        print(f"  wall convcli/before: median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
        print(f"  outputs bit-identical: {identical(tmp / 'convcli.npy', tmp / 'before.npy')}")


if __name__ == "__main__":
    main()
