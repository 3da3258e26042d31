"""Whole process: gaussian sigma 2 on a 3840x2160 RGB PNG, convcli against a cv2 script, vips and ImageMagick.

    python bench/bench_whole_process.py [--repeats 5] [--levels 1,6] [--input big.png]
                                        [--before DIR] [--magick-repeats 1]

Each tool is a fresh process that reads the PNG, blurs it (sigma 2) and writes
a PNG at the same zlib level:

  - convcli:  ``convcli filter in.png -k gaussian:sigma=2 --compress-level L -o out.png``
  - cv2:      a Python script: cv2.imread, cv2.GaussianBlur (17x17, reflect border), cv2.imwrite
  - vips:     ``vips gaussblur in.png out.png[compression=L] 2`` (libvips-tools; skipped if missing)
  - magick:   ``convert in.png -gaussian-blur 0x2 -define png:compression-level=L out.png`` (skipped if missing)

``--before DIR`` also times convcli run from another checkout (e.g. the tree of
an older commit, ``git archive <rev> | tar -x -C DIR``) to show a change's effect.
Prints the median wall time, the output size, the largest pixel difference
from convcli's output (integer approximations differ by a step or two) and the
ratio convcli / tool.  The input is made from examples/photo.jpg unless given.
Peers are not dependencies: ``apt-get install libvips-tools imagemagick``.
"""
from __future__ import annotations

import argparse
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

CV2_SCRIPT = """
import sys, cv2
src, dst, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
image = cv2.imread(src, cv2.IMREAD_UNCHANGED)
blurred = cv2.GaussianBlur(image, (17, 17), 2, borderType=cv2.BORDER_REFLECT)
cv2.imwrite(dst, blurred, [cv2.IMWRITE_PNG_COMPRESSION, level])
"""


def make_input(path: Path, size: tuple[int, int] = (3840, 2160)) -> None:
    Image.open(ROOT / "examples" / "photo.jpg").convert("RGB").resize(size, Image.BICUBIC).save(path)


def timed(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `cmd`."""
    # Run outside the source tree: `python -m` puts the working directory
    # ahead of PYTHONPATH, which would hide a --before checkout.
    # Byte-code is cached as for an installed package (the warm-up run writes
    # it): PYTHONDONTWRITEBYTECODE would make every run recompile convcli (~0.1 s).
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if child.returncode:
        raise SystemExit(f"{cmd[0]} failed ({child.returncode}): {stderr.strip()}")
    return wall, usage.ru_utime + usage.ru_stime


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def tools(src: Path, out: Path, level: int, before: str | None) -> list[tuple[str, list[str], dict | None]]:
    convcli = ["filter", str(src), "-k", "gaussian:sigma=2", "--compress-level", str(level), "-o"]
    rows = [("convcli", [sys.executable, "-m", "convcli", *convcli, str(out / "convcli.png")], None)]
    if before:
        env = dict(os.environ, PYTHONPATH=before)
        rows.append(("convcli before", [sys.executable, "-m", "convcli", *convcli, str(out / "before.png")], env))
    rows.append(("cv2 script", [sys.executable, "-c", CV2_SCRIPT, str(src), str(out / "cv2.png"), str(level)], None))
    if shutil.which("vips"):
        rows.append(("vips", ["vips", "gaussblur", str(src), f"{out / 'vips.png'}[compression={level}]", "2"], None))
    else:
        print("vips: not installed (apt-get install libvips-tools), skipped")
    if shutil.which("convert"):
        rows.append(("imagemagick", ["convert", str(src), "-gaussian-blur", "0x2", "-define",
                                     f"png:compression-level={level}", str(out / "imagemagick.png")], None))
    else:
        print("ImageMagick convert: not installed, skipped")
    return rows


def output_of(name: str, out: Path) -> Path:
    return out / {"convcli": "convcli.png", "convcli before": "before.png", "cv2 script": "cv2.png",
                  "vips": "vips.png", "imagemagick": "imagemagick.png"}[name]


def run_level(src: Path, out: Path, level: int, args) -> None:
    rows = tools(src, out, level, args.before)
    for name, cmd, env in rows:
        timed(cmd, env, out)  # warm the page cache and any compiled-code caches
    # Round robin, so that load from elsewhere on a shared machine falls on every tool alike.
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in rows}
    for i in range(args.repeats):
        for name, cmd, env in rows:
            if name != "imagemagick" or i < args.magick_repeats:
                samples[name].append(timed(cmd, env, out))
    times = {name: statistics.median(wall for wall, _ in values) for name, values in samples.items()}
    cpu = {name: statistics.median(used for _, used in values) for name, values in samples.items()}
    ours = times["convcli"]
    reference = pixels(output_of("convcli", out))
    print(f"\nPNG level {level}, input {src.name} {Image.open(src).size[0]}x{Image.open(src).size[1]}, "
          f"medians of {args.repeats} runs")
    print(f"{'tool':<16}{'wall s':>9}{'cpu s':>9}{'MB out':>9}{'max |diff|':>12}{'convcli / tool (wall)':>23}")
    for name, _, _ in rows:
        path = output_of(name, out)
        diff = int(np.abs(pixels(path) - reference).max())
        print(f"{name:<16}{times[name]:>9.3f}{cpu[name]:>9.3f}{path.stat().st_size / 1e6:>9.2f}{diff:>12}"
              f"{ours / times[name]:>23.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--magick-repeats", type=int, default=1, help="ImageMagick takes seconds a run")
    parser.add_argument("--levels", default="1", help="comma-separated zlib levels, e.g. 1,6")
    parser.add_argument("--input", type=Path, help="an RGB PNG (default: examples/photo.jpg at 3840x2160)")
    parser.add_argument("--before", help="a checkout of convcli to time as 'convcli before'")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {sys.platform}; python {sys.version.split()[0]}; "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = args.input or tmp / "photo4k.png"
        if args.input is None:
            make_input(src)
        for level in (int(v) for v in args.levels.split(",")):
            run_level(src, tmp, level, args)


if __name__ == "__main__":
    main()
