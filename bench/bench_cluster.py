"""A Dask cluster on this machine (a scheduler and two one-thread workers on 127.0.0.1) against the local runs.

    python bench/bench_cluster.py make DIR [--files 200]          # DIR/photos: 1024x768 RGB PNGs from examples/
    python bench/bench_scale.py make DIR                          # DIR/vol.zarr, the 1 GiB float32 volume
    python bench/bench_cluster.py photos DIR [-n 3]               # batch: --scheduler against -j 2, files/s
    python bench/bench_cluster.py tiny DIR [-n 3] [--files 2000]  # tiny files: grouped tasks against one per file
    python bench/bench_cluster.py volume DIR [-n 3]               # chunked Zarr: --scheduler against threads, identity

Each part starts the scheduler and the workers (``dask scheduler``, ``dask
worker``), runs the two commands in turns (A B A B ...: drift hits both), prints
every run and the medians, checks the outputs are the same bytes, and stops
what it started.  Same machine, same two cores: the cluster's figure is its
overhead (scheduler, task round trips, no shared pool), not a speed-up.
"""
from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "gaussian:sigma=2"
DASK = str(Path(sys.executable).with_name("dask"))


def make(folder: Path, files: int) -> None:
    """``files`` 1024x768 RGB PNGs cut from the example photos at shifting offsets (photo-like, compressible)."""
    import numpy as np
    from PIL import Image

    out = folder / "photos"
    out.mkdir(parents=True, exist_ok=True)
    sources = [np.asarray(Image.open(ROOT / "examples" / n).convert("RGB").resize((1536, 1152)))
               for n in ("photo.jpg", "coffee.jpg", "rocket.jpg")]
    for i in range(files):
        src = sources[i % len(sources)]
        y, x = (i * 37) % 384, (i * 53) % 512
        Image.fromarray(np.ascontiguousarray(src[y:y + 768, x:x + 1024])).save(out / f"p{i:04d}.png")
    print(f"{files} PNGs in {out}")


def make_tiny(folder: Path, files: int) -> Path:
    import numpy as np
    from PIL import Image

    out = folder / f"tiny{files}"
    if not out.exists():
        out.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(files):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(out / f"t{i:05d}.png")
    return out


@contextlib.contextmanager
def cluster(folder: Path):
    """A scheduler and two one-thread worker processes on 127.0.0.1; its address; all stopped on the way out."""
    info = folder / "scheduler.json"
    info.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                 "--scheduler-file", str(info)], env=env, stderr=subprocess.DEVNULL,
                                start_new_session=True)]
    try:
        _wait(info.exists)
        for _ in range(2):
            started.append(subprocess.Popen([DASK, "worker", "--scheduler-file", str(info), "--nthreads", "1",
                                             "--no-dashboard", "--host", "127.0.0.1"], env=env,
                                            stderr=subprocess.DEVNULL, start_new_session=True))
        from distributed import Client

        address = json.loads(info.read_text())["address"]
        with Client(address) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("the Dask scheduler did not start")
        time.sleep(0.05)


def timed(command: list[str], clean: Path, env: dict | None = None) -> float:
    shutil.rmtree(clean, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, **(env or {})))
    return time.perf_counter() - start


def pairs(a: tuple, b: tuple, runs: int) -> tuple[list[float], list[float]]:
    """``runs`` timings of each command, in turns; each is (label, command, output to remove first[, env])."""
    ta, tb = [], []
    for _ in range(runs):
        for (label, command, clean, *env), times in ((a, ta), (b, tb)):
            times.append(timed(command, clean, *env))
            print(f"  {label}: {times[-1]:.2f} s", flush=True)
    return ta, tb


def report(what: str, count: int, unit: str, a: list[float], b: list[float], names: tuple[str, str]) -> None:
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{what}: {names[0]} {ma:.2f} s ({count / ma:.3g} {unit}/s), {names[1]} {mb:.2f} s "
          f"({count / mb:.3g} {unit}/s); {names[0]}/{names[1]} wall {ma / mb:.2f} (medians of {len(a)})")


def same_tree(x: Path, y: Path) -> bool:
    files_x = sorted(p.relative_to(x) for p in x.rglob("*") if p.is_file())
    files_y = sorted(p.relative_to(y) for p in y.rglob("*") if p.is_file())
    return files_x == files_y and all(filecmp.cmp(x / p, y / p, shallow=False) for p in files_x)


CONVCLI = [sys.executable, "-m", "convcli"]


def photos(folder: Path, runs: int) -> None:
    src = folder / "photos"
    count = len(list(src.glob("*.png")))
    there, here = folder / "out-cluster", folder / "out-local"
    with cluster(folder) as address:
        a, b = pairs(("--scheduler", CONVCLI + ["filter", str(src), "-o", str(there), "-k", KERNEL, "-q",
                                                 "--scheduler", address], there),
                     ("-j 2", CONVCLI + ["filter", str(src), "-o", str(here), "-k", KERNEL, "-q", "-j", "2"], here),
                     runs)
    report(f"{count} PNGs 1024x768, {KERNEL}", count, "files", a, b, ("cluster", "local -j 2"))
    print(f"outputs identical: {same_tree(there, here)}")


def tiny(folder: Path, runs: int, files: int) -> None:
    """Grouped tasks (the default) against one task per file, on files that take a millisecond each."""
    src = make_tiny(folder, files)
    grouped, single = folder / "tiny-grouped", folder / "tiny-single"
    one_per_task = ("import sys; import convcli.pipeline.cluster as c; c.GROUP_FILES = 1; "
                    "from convcli.cli import main; sys.exit(main(sys.argv[1:]))")
    with cluster(folder) as address:
        common = ["filter", str(src), "-k", KERNEL, "-q", "--scheduler", address]
        a, b = pairs(("grouped", CONVCLI + common + ["-o", str(grouped)], grouped),
                     ("one per task", [sys.executable, "-c", one_per_task] + common + ["-o", str(single)], single),
                     runs)
    report(f"{files} PNGs 32x32 on the cluster", files, "files", a, b, ("grouped", "one per task"))
    print(f"outputs identical: {same_tree(grouped, single)}")


def volume(folder: Path, runs: int) -> None:
    src = folder / "vol.zarr"
    there, here = folder / "vol-cluster.zarr", folder / "vol-local.zarr"
    with cluster(folder) as address:
        a, b = pairs(("--scheduler", CONVCLI + ["filter", str(src), "-k", KERNEL, "-q", "-o", str(there),
                                                 "--scheduler", address], there),
                     ("threads", CONVCLI + ["filter", str(src), "-k", KERNEL, "-q", "-o", str(here)], here,
                      {"DASK_SCHEDULER_ADDRESS": ""}),
                     runs)
    import numpy as np
    import zarr

    stored = zarr.open_array(str(src), mode="r")
    gib = stored.nbytes / 2**30
    report(f"{src.name} ({' x '.join(map(str, stored.shape))} float32), {KERNEL}", gib, "GiB", a, b,
           ("cluster", "local threads"))

    equal = np.array_equal(zarr.open_array(str(there), mode="r")[...], zarr.open_array(str(here), mode="r")[...])
    print(f"arrays equal: {equal}; chunk files identical: {same_tree(there, here)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("make", "photos", "tiny", "volume"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--files", type=int, default=None)
    parser.add_argument("-n", type=int, default=3)
    args = parser.parse_args()
    if args.action == "make":
        make(args.folder, args.files or 200)
    elif args.action == "photos":
        photos(args.folder, args.n)
    elif args.action == "tiny":
        tiny(args.folder, args.n, args.files or 2000)
    else:
        volume(args.folder, args.n)


if __name__ == "__main__":
    main()
