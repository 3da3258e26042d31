"""Whole process on a 24-megapixel camera JPEG: convcli against vips (and ImageMagick), single files and a batch.

    python bench/bench_photo.py [--repeats 7] [--only gaussian,sobel,sharpen] [--batch 8] [--magick]
                                [--input photo.jpg] [--before DIR] [--json FILE]

Each tool is a fresh process that reads the JPEG, filters it and writes a
JPEG at quality 95 (convcli keeps the input's own tables: the photo is made
at quality 95, so both sides write the same tables):

  - gaussian:  ``convcli filter in.jpg -k gaussian:sigma=2``  vs  ``vips gaussblur in.jpg out.jpg[Q=95] 2``
  - sobel:     ``convcli filter in.jpg -k sobel``             vs  ``vips sobel in.jpg out.jpg[Q=95]``
               (libvips' own Sobel edge map: not the same numbers, the same kind of work)
  - sharpen:   ``convcli filter in.jpg -k sharpen``           vs  ``vips conv in.jpg out.jpg[Q=95] sharpen.mat``
               (the same 3x3 kernel, integer precision)
  - ImageMagick's ``convert`` with ``-gaussian-blur 0x2`` / ``-morphology Convolve`` with ``--magick``
    (about 15 s a run).

Tools take turns (A B A B ...), so load from elsewhere on a shared machine
falls on each alike; the medians of wall time, CPU time (user + system)
and peak resident memory (GNU time's maximum RSS, which is the process's
own) are printed with the ratios convcli / vips.  ``--batch N`` then times
N copies of the photo (hard links) filtered by ``convcli filter DIR -o OUT
-j 2`` against a shell loop of vips and GNU ``parallel -j 2`` running vips,
in files per second.  ``--before DIR`` times another checkout of convcli
too (``git archive <rev> | tar -x -C DIR``).  The photo is made from the
examples (three pictures enlarged to 6000x4000, sensor-like noise added,
quality 95 with EXIF) unless ``--input`` gives one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARPEN = "3 3\n0 -1 0\n-1 5 -1\n0 -1 0\n"  # libvips matrix file: width height, then the rows
WORKLOADS = {
    "gaussian": (["-k", "gaussian:sigma=2"], ["gaussblur", "{src}", "{dst}[Q=95]", "2"],
                 ["-gaussian-blur", "0x2"]),
    "sobel": (["-k", "sobel"], ["sobel", "{src}", "{dst}[Q=95]"], ["-define", "convolve:scale=!",
                                                                    "-morphology", "Convolve", "Sobel"]),
    "sharpen": (["-k", "sharpen"], ["conv", "{src}", "{dst}[Q=95]", "{mat}", "--precision", "integer"],
                ["-morphology", "Convolve", "3x3: 0,-1,0 -1,5,-1 0,-1,0"]),
}


def make_photo(path: Path, size=(6000, 4000), seed: int = 0) -> None:
    """A camera-like photo: the example pictures enlarged side by side, with luminance and colour noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", size)
    names = ["photo.jpg", "coffee.jpg", "rocket.jpg"]
    pictures = [Image.open(ROOT / "examples" / n).convert("RGB") for n in names]
    canvas.paste(pictures[0].resize((width // 2, height), Image.BICUBIC), (0, 0))
    canvas.paste(pictures[1].resize((width - width // 2, height // 2), Image.BICUBIC), (width // 2, 0))
    canvas.paste(pictures[2].resize((width - width // 2, height - height // 2), Image.BICUBIC),
                 (width // 2, height // 2))
    pixels = np.asarray(canvas).astype(np.int16)
    noise = rng.normal(0, 4, (height, width, 1)) + rng.normal(0, 2, (height, width, 3))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "convcli bench", "24 MP"
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(
        path, quality=95, exif=exif.tobytes(), dpi=(300, 300))


def timed(cmd: list[str], env: dict | None = None, shell: bool = False) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak MiB of one run (GNU time measures the child)."""
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        wrapped = ["/usr/bin/time", "-o", report.name, "-f", "%U %S %M"]
        wrapped += ["sh", "-c", cmd] if shell else cmd
        start = time.perf_counter()
        done = subprocess.run(wrapped, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"{cmd if shell else cmd[0]} failed ({done.returncode}): "
                             f"{done.stderr.decode(errors='replace').strip()}")
        user, system, peak = report.read().split()[-3:]
    return wall, float(user) + float(system), int(peak) / 1024


def tools(name: str, src: Path, out: Path, args) -> list[tuple[str, list[str], dict | None]]:
    ours, theirs, magick = WORKLOADS[name]
    mat = out / "sharpen.mat"
    mat.write_text(SHARPEN)
    rows = [("convcli", [sys.executable, "-m", "convcli", "filter", str(src), *ours, "-o", str(out / "convcli.jpg")],
             None)]
    if args.before:
        rows.append(("convcli before", [sys.executable, "-m", "convcli", "filter", str(src), *ours,
                                        "-o", str(out / "before.jpg")], dict(os.environ, PYTHONPATH=args.before)))
    if shutil.which("vips"):
        rows.append(("vips", ["vips"] + [a.format(src=src, dst=out / "vips.jpg", mat=mat) for a in theirs], None))
    if args.magick and shutil.which("convert"):
        rows.append(("imagemagick", ["convert", str(src), *magick, "-quality", "95", str(out / "magick.jpg")], None))
    return rows


def race(rows, repeats: int) -> dict[str, tuple[float, float, float]]:
    """Medians of wall, CPU and peak for every row, the rows taking turns."""
    for _, cmd, env in rows:
        timed(cmd, env)  # page cache, byte-code cache
    samples = {name: [] for name, _, _ in rows}
    for _ in range(repeats):
        for name, cmd, env in rows:
            samples[name].append(timed(cmd, env))
    return {name: tuple(statistics.median(v[i] for v in values) for i in range(3)) for name, values in samples.items()}


def report(title: str, medians: dict, unit: str = "s") -> None:
    print(f"\n{title}")
    print(f"{'tool':<16}{'wall ' + unit:>10}{'cpu s':>9}{'peak MiB':>10}{'wall ratio':>12}{'cpu ratio':>11}"
          f"{'peak ratio':>12}")
    peer = medians.get("vips")
    for name, (wall, cpu, peak) in medians.items():
        ratios = ("", "", "") if peer is None else (f"{wall / peer[0]:.2f}", f"{cpu / peer[1]:.2f}",
                                                    f"{peak / peer[2]:.2f}")
        print(f"{name:<16}{wall:>10.3f}{cpu:>9.3f}{peak:>10.1f}{ratios[0]:>12}{ratios[1]:>11}{ratios[2]:>12}")


def batch(src: Path, tmp: Path, count: int, repeats: int, args) -> dict[str, float]:
    """Files per second for `count` copies of the photo (gaussian sigma 2), convcli -j 2 against vips."""
    folder = tmp / "batch"
    folder.mkdir()
    for i in range(count):
        os.link(src, folder / f"photo{i:03d}.jpg")
    out = tmp / "batch-out"
    runs = [("convcli -j 2", f"rm -rf {out} && {sys.executable} -m convcli filter {folder} -o {out} "
                             f"-k gaussian:sigma=2 -j 2 -q")]
    if shutil.which("vips"):
        runs.append(("vips, shell loop", f"mkdir -p {out}v && for f in {folder}/*.jpg; do "
                                         f"vips gaussblur \"$f\" {out}v/$(basename \"$f\")[Q=95] 2; done"))
        if shutil.which("parallel"):
            runs.append(("vips, parallel -j 2", f"mkdir -p {out}p && parallel --will-cite -j 2 "
                                                f"vips gaussblur {{}} {out}p/{{/}}[Q=95] 2 ::: {folder}/*.jpg"))
    for _, cmd in runs:
        timed(cmd, shell=True)
    walls = {name: [] for name, _ in runs}
    for _ in range(repeats):
        for name, cmd in runs:
            walls[name].append(timed(cmd, shell=True)[0])
    rates = {name: count / statistics.median(values) for name, values in walls.items()}
    print(f"\nbatch of {count} photos, gaussian sigma 2, medians of {repeats}")
    for name, rate in rates.items():
        print(f"{name:<22}{rate:>8.2f} files/s")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    parser.add_argument("--batch", type=int, default=0, help="also a batch of this many copies (-j 2)")
    parser.add_argument("--batch-repeats", type=int, default=3)
    parser.add_argument("--magick", action="store_true", help="time ImageMagick too (about 15 s a run)")
    parser.add_argument("--input", type=Path, help="a JPEG photo (default: a 6000x4000 one made from the examples)")
    parser.add_argument("--before", help="a checkout of convcli to time as 'convcli before'")
    parser.add_argument("--json", metavar="FILE", help="write the medians as JSON")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the start")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = args.input or tmp / "photo24mp.jpg"
        if args.input is None:
            make_photo(src)
        size = Image.open(src).size
        for name in args.only.split(","):
            medians = race(tools(name, src, tmp, args), args.repeats)
            report(f"{name}: {size[0]}x{size[1]} JPEG, whole process, medians of {args.repeats}", medians)
            results[name] = medians
        if args.batch:
            results["batch"] = batch(src, tmp, args.batch, args.batch_repeats, args)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
