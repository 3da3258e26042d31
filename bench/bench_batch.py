"""Batch throughput: `convcli filter DIR -o OUT -j N` against a shell loop and ImageMagick.

    python bench/bench_batch.py [--files 500] [--jobs 2] [--loop-sample 40]
    python bench/bench_batch.py --progress 20000 [--repeats 3]

Makes ``--files`` 640x480 RGB PNGs, then times, with the same box:5 kernel:
  - convcli's batch mode (one process, a pool of ``--jobs`` workers);
  - a shell loop calling one `convcli filter` process per file (timed on
    ``--loop-sample`` files and scaled, since it is slow);
  - ImageMagick's `mogrify -morphology Convolve Square:2` when installed (same
    5x5 mean), and `convert` per file in a loop.
Prints files per second and the ratio to each peer.

``--progress N`` times instead what the progress bar costs: a batch of N tiny
``.npy`` files with the bar drawn on a pseudo-terminal, against the same batch
with ``-q``, in turns (medians of ``--repeats``), and the parent's own CPU time
in each (read from /proc just before it is reaped).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


# -morphology Convolve does not normalise its kernel: scale=! makes Square:2 the 5x5 mean (box:5).
MAGICK_BOX5 = ["-define", "convolve:scale=!", "-morphology", "Convolve", "Square:2"]


def make_pngs(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    base = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
    paths = []
    for i in range(count):
        path = folder / f"img{i:04d}.png"
        Image.fromarray(np.roll(base, i, axis=1)).save(path, compress_level=1)
        paths.append(path)
    return paths


def timed(cmd: list[str] | str, shell: bool = False) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, shell=shell, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _on_terminal(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` with stderr on a pseudo-terminal (so the bar is drawn): wall seconds, its own CPU seconds."""
    import os
    import threading

    leader, follower = os.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=follower, stdout=subprocess.DEVNULL)
    os.close(follower)
    drain = threading.Thread(target=lambda: _drain(leader), daemon=True)
    drain.start()
    cpu = 0.0
    while proc.poll() is None:  # its own ticks, not its workers': sampled until it ends
        try:
            with open(f"/proc/{proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    drain.join(5)
    return wall, cpu


def _drain(fd: int) -> None:
    import os

    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass
    os.close(fd)


def progress_cost(count: int, jobs: int, repeats: int) -> None:
    import statistics

    convcli = [sys.executable, "-m", "convcli"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        tiny = np.ones((8, 8), np.float32)
        for i in range(count):
            np.save(src / f"t{i:06d}.npy", tiny)
        runs = {"bar": [], "quiet": []}
        for r in range(repeats):
            for name, extra in (("bar", []), ("quiet", ["-q"])):
                out = Path(tmp) / f"out_{name}_{r}"
                runs[name].append(_on_terminal(convcli + ["filter", str(src), "-o", str(out), "-k", "box:3",
                                                          "-j", str(jobs), *extra]))
                shutil.rmtree(out)
    print(f"{count} tiny .npy files, box:3, -j {jobs}, medians of {repeats}")
    for name, rows in runs.items():
        wall = statistics.median(w for w, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"{name:6s} wall {wall:7.2f} s   parent CPU {cpu:6.2f} s ({100 * cpu / wall:.0f}% of a core)")
    ratio = statistics.median(b[0] / q[0] for b, q in zip(runs["bar"], runs["quiet"]))
    print(f"with the bar / quiet, wall: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--loop-sample", type=int, default=40, help="files timed for the per-file loops")
    parser.add_argument("--progress", type=int, default=0, help="time the progress bar on this many tiny files")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.progress:
        progress_cost(args.progress, args.jobs, args.repeats)
        return
    convcli = [sys.executable, "-m", "convcli"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "in"
        src.mkdir()
        paths = make_pngs(src, args.files)
        rows = []
        t = timed(convcli + ["filter", str(src), "-o", str(tmp / "out"), "-k", "box:5", "-j", str(args.jobs), "-q"])
        ours = args.files / t
        rows.append((f"convcli batch -j {args.jobs}", ours))
        sample = paths[: args.loop_sample]
        loop = " ; ".join(f"{' '.join(convcli)} filter {p} -k box:5 -o {tmp / 'loop'}_{p.name} -q" for p in sample)
        rows.append(("shell loop of convcli processes", len(sample) / timed(loop, shell=True)))
        if shutil.which("mogrify") and shutil.which("convert"):
            mog = tmp / "mog"
            mog.mkdir()
            t = timed(["mogrify", "-path", str(mog), *MAGICK_BOX5, *map(str, paths)])
            rows.append(("ImageMagick mogrify (one process)", args.files / t))
            loop = " ; ".join(f"convert {p} {' '.join(MAGICK_BOX5)} {tmp / 'im'}_{p.name}" for p in sample)
            rows.append(("shell loop of ImageMagick convert", len(sample) / timed(loop, shell=True)))
        else:
            print("ImageMagick not installed (apt-get install imagemagick): skipped")
    print(f"{args.files} PNGs 640x480 RGB, box 5x5, {args.jobs} workers")
    print(f"{'contender':40s} {'files/s':>9s} {'convcli is x faster':>20s}")
    for name, rate in rows:
        print(f"{name:40s} {rate:9.1f} {ours / rate:20.2f}")


if __name__ == "__main__":
    main()
