"""Race convcli against every installed peer on the issue-7 workloads and print one table of ratios.

    python bench/bench_suite.py [--repeats 3] [--quick] [--only TEXT]

One script, one table: for each workload, the median seconds of convcli and of
each peer over ``--repeats`` rounds (contenders take turns round by round) and
the ratio convcli / peer (below 1 means convcli is faster).  Wherever arrays
are compared the outputs are checked to agree first; the ``agree`` column
says how (``ok`` within float32 tolerance, ``max|d|=N`` in 8/16-bit steps for
whole-process files).  Peers that are not installed are listed as
``skipped: <peer> not installed``.  ``--quick`` shrinks every input so the
whole run takes seconds (a smoke run, not a measurement).

The workloads and timing live in the per-area scripts and are imported from
there, not copied: bench_engine.py (engine vs scipy.ndimage, OpenCV, FFT,
numpy), bench_rank.py (median, morphology and pooling vs OpenCV, scipy.ndimage,
numpy; PyTorch's max_pool2d through ``--peer-python``), bench_whole_process.py (4K PNG gaussian vs a cv2 script, vips,
ImageMagick), bench_photo.py (24 MP camera JPEG, whole process, vs vips: wall and
peak memory; full size and medians of at least 3 even with ``--quick``), bench_classify.py (EfficientNet-Lite0 vs PyTorch, onnxruntime)
and bench_batch.py (batch mode vs ImageMagick mogrify); the closing line is
auto's regret on bench_regret.py's grid, one case per size up to 8.3 M samples (a 4K plane).  Only the SoX rows
(whole-process audio FIR) are defined here: ``sox in.wav out.wav fir
coefs.txt`` against ``convcli filter in.wav -k coefs.txt --convolve -o
out.wav`` on a 16-bit stereo 44.1 kHz WAV, once with a 101-tap FIR and once
with an 88200-tap (2 s) response.  SoX's fir compensates its own delay: the
lag that best aligns the outputs is searched, not assumed, and printed (on
this machine 0 samples for 101 taps, 1 sample for the even 88200 taps, where
SoX centres the kernel one sample later than convcli's "same" rule); the
edges, padded differently, are left out of the comparison.

Smoke run (no pytest): ``python bench/bench_suite.py --quick --repeats 1``
takes about 15 s and exits non-zero if any peer's output disagrees.

Peers are for benchmarking only, never convcli dependencies.  To install them:

    pip install scipy                          # already a convcli dependency
    pip install opencv-python-headless         # OpenCV: engine rows + the cv2 whole-process script
    apt-get install -y libvips-tools           # vips
    apt-get install -y imagemagick             # ImageMagick convert / mogrify
    apt-get install -y sox                     # SoX: whole-process audio FIR
    pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 onnxruntime onnx   # classify rows

The classify rows need PyTorch / onnxruntime importable by the interpreter
running this script, or by the one given with ``--peer-python`` (convcli's own
backend always runs in this one); otherwise they are reported as skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_batch  # noqa: E402
import bench_classify  # noqa: E402
import bench_engine  # noqa: E402
import bench_photo  # noqa: E402
import bench_rank  # noqa: E402
import bench_regret  # noqa: E402
import bench_whole_process  # noqa: E402

ROWS: list[tuple[str, str, float, float, str]] = []  # workload, peer, convcli s, peer s, agreement
SKIPPED: list[str] = []


def add(workload: str, peer: str, ours: float, theirs: float, agree: str) -> None:
    ROWS.append((workload, peer, ours, theirs, agree))
    print(f"  {workload:50s} {peer:20s} {ours * 1e3:9.1f} {theirs * 1e3:9.1f} {ours / theirs:6.2f}  {agree}",
          flush=True)


def skip(peer: str, why: str = "not installed") -> None:
    line = f"skipped: {peer} {why}"
    if line not in SKIPPED:
        SKIPPED.append(line)


# --------------------------------------------------------------------------- engine (in process)
def engine_rows(args) -> None:
    from convcli import correlate

    try:
        import cv2
    except ImportError:
        cv2 = None
        skip("OpenCV (pip install opencv-python-headless)")
    for name, x, kernel, opts, kind in bench_engine.workloads(args.quick):
        if args.only not in name:
            continue
        channel_axis = -1 if x.ndim > kernel.ndim else None
        ours = lambda: correlate(x, kernel, channel_axis=channel_axis, pad_mode="reflect", **opts)  # noqa: E731
        peers = {
            "scipy.ndimage": bench_engine.scipy_peer(x, kernel, opts, kind),
            "OpenCV": bench_engine.opencv_peer(cv2, x, kernel, opts, kind),
            "FFT (2 workers)": bench_engine.fft_peer(x, kernel, opts, kind),
            "numpy.convolve": bench_engine.numpy_peer(x, kernel, opts, kind),
        }
        peers = {k: v for k, v in peers.items() if v is not None}
        expected = ours()
        scale = float(np.abs(kernel).sum())
        agree = {}
        for peer, fn in peers.items():
            try:
                np.testing.assert_allclose(expected, fn(), rtol=1e-3, atol=1e-3 * scale)
                agree[peer] = "ok"
            except AssertionError:
                agree[peer] = "DISAGREE"
        # scipy's direct 7x7x7 on 256^3 takes seconds: one run is enough.
        slow = {"scipy.ndimage"} if not args.quick and kind == "general" and kernel.size > 27 and kernel.ndim == 3 \
            else set()
        medians = bench_engine.race({"convcli": ours, **{k: v for k, v in peers.items() if k not in slow}},
                                    args.repeats)
        medians.update(bench_engine.race({k: peers[k] for k in slow if k in peers}, 1))
        for peer in peers:
            add(name, peer, medians["convcli"], medians[peer], agree[peer])


# --------------------------------------------------------------------------- rank, morphology, pooling
TORCH_POOL = """
import sys, time, statistics, numpy as np, torch
torch.set_num_threads(2)
x = torch.from_numpy(np.load(sys.argv[1])).permute(2, 0, 1)[None].contiguous()  # NCHW, PyTorch's own layout
times = []
for _ in range(int(sys.argv[3]) + 1):
    start = time.perf_counter()
    y = torch.nn.functional.max_pool2d(x, 2)
    times.append(time.perf_counter() - start)
np.save(sys.argv[2], y[0].permute(1, 2, 0).numpy())
print(statistics.median(times[1:]))
"""


def rank_rows(args, tmp: Path) -> None:
    from convcli import apply

    try:
        import cv2  # noqa: F401
    except ImportError:
        skip("OpenCV (pip install opencv-python-headless)")
        return
    for name, spec, x, kwargs, peers in bench_rank.workloads(args.quick):
        if args.only not in name:
            continue
        ours = lambda: apply(x, spec, **kwargs)  # noqa: E731
        expected = ours()
        agree = {}
        for peer, fn in peers.items():
            same = peer == "memory copy" or np.allclose(expected, fn().reshape(expected.shape), rtol=1e-6,
                                                         atol=1e-6)
            agree[peer] = "ok" if same else "DISAGREE"
        slow = {p for p in peers if p == "scipy" and spec.startswith(bench_rank.SLOW_SCIPY)}
        medians = bench_engine.race({"convcli": ours, **{k: v for k, v in peers.items() if k not in slow}},
                                    args.repeats)
        medians.update(bench_engine.race({k: peers[k] for k in slow}, 1))
        for peer in peers:
            add(name, "scipy.ndimage" if peer == "scipy" else peer, medians["convcli"], medians[peer], agree[peer])
        if spec == "maxpool:2":
            torch_pool_row(args, tmp, name, x, expected, medians["convcli"])


def torch_pool_row(args, tmp: Path, name: str, x: np.ndarray, expected: np.ndarray, ours: float) -> None:
    python = args.peer_python or sys.executable
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True)
    if probe.returncode != 0:
        skip("PyTorch (--peer-python with torch installed)")
        return
    np.save(tmp / "pool_in.npy", x)
    done = subprocess.run([python, "-c", TORCH_POOL, str(tmp / "pool_in.npy"), str(tmp / "pool_out.npy"),
                           str(args.repeats)], capture_output=True, text=True, check=True)
    same = np.array_equal(np.load(tmp / "pool_out.npy"), expected)
    add(name, "PyTorch max_pool2d", ours, float(done.stdout), "ok" if same else "DISAGREE")


# --------------------------------------------------------------------------- whole process, 4K PNG
def png_rows(args, tmp: Path) -> None:
    size = (960, 540) if args.quick else (3840, 2160)
    src = tmp / "photo.png"
    bench_whole_process.make_input(src, size)
    if not shutil.which("vips"):
        skip("vips (apt-get install libvips-tools)")
    if not shutil.which("convert"):
        skip("ImageMagick (apt-get install imagemagick)")
    with contextlib.redirect_stdout(io.StringIO()):  # its own "not installed" lines: reported above instead
        tools = bench_whole_process.tools(src, tmp, 1, None)
    if importlib.util.find_spec("cv2") is None:
        tools = [t for t in tools if t[0] != "cv2 script"]
        skip("cv2 script (pip install opencv-python-headless)")
    for _, cmd, env in tools:
        bench_whole_process.timed(cmd, env, tmp)  # warm caches
    times: dict[str, list[float]] = {name: [] for name, _, _ in tools}
    for i in range(args.repeats):
        for name, cmd, env in tools:
            if name != "imagemagick" or i == 0:  # ImageMagick takes seconds a run
                times[name].append(bench_whole_process.timed(cmd, env, tmp)[0])
    reference = bench_whole_process.pixels(bench_whole_process.output_of("convcli", tmp))
    ours = statistics.median(times["convcli"])
    label = f"whole process: gaussian {size[0]}x{size[1]} PNG"
    for name, _, _ in tools[1:]:
        diff = int(np.abs(bench_whole_process.pixels(bench_whole_process.output_of(name, tmp)) - reference).max())
        add(label, name, ours, statistics.median(times[name]), f"max|d|={diff} (8-bit)")


def photo_rows(args, tmp: Path) -> None:
    """A camera JPEG, whole process, against vips: gaussian, sobel and sharpen (bench_photo.py's workloads)."""
    if not shutil.which("vips"):
        skip("vips (apt-get install libvips-tools)")
        return
    # Full size even with --quick (a few seconds a round): the README quotes these rows, and a smaller
    # photo would take the whole-image path (MIN_PIXELS), not the camera path it measures.
    size = (6000, 4000)
    src = tmp / "photo.jpg"
    bench_photo.make_photo(src, size)
    options = argparse.Namespace(before=None, magick=False)
    for name in bench_photo.WORKLOADS:
        medians = bench_photo.race(bench_photo.tools(name, src, tmp, options), max(3, args.repeats))
        (wall, _, peak), (peer_wall, _, peer_peak) = medians["convcli"], medians["vips"]
        add(f"whole process: {name} {size[0]}x{size[1]} JPEG", "vips", wall, peer_wall,
            f"peak {peak:.0f}/{peer_peak:.0f} MiB = {peak / peer_peak:.2f}x")


def regret_line(args) -> str:
    """auto against the fastest forced method on a few cases of bench_regret's grid: median and worst regret."""
    cases = bench_regret.suite_cases()[:4 if args.quick else None]
    rows = [bench_regret.measure(case, max(5, args.repeats), i) for i, case in cases]
    regrets = [r["regret"] for r in rows]
    return (f"auto / fastest forced method, {len(rows)} cases of bench_regret.py's grid, one per size to 8.3 M samples "
            f"(best of {max(5, args.repeats)}): median {statistics.median(regrets):.2f}, worst {max(regrets):.2f}, "
            f"over 1.2: {sum(r > 1.2 for r in regrets)}")


# --------------------------------------------------------------------------- whole process, audio vs SoX
def _write_wav(path: Path, samples: np.ndarray) -> None:
    import soundfile

    soundfile.write(path, samples, 44100, subtype="PCM_16")


def _aligned_diff(ours: np.ndarray, theirs: np.ndarray, taps: int) -> tuple[int, int]:
    """(lag of SoX's output relative to convcli's, max |difference| in 16-bit steps at that lag).

    convcli's "same" output is centred on the kernel; SoX's ``fir`` is a
    convolution whose centring is its own, so the lag is found rather than
    assumed (searched within one kernel length) and the edges, where the two
    pad differently, are left out of the comparison.
    """
    n = min(len(ours), len(theirs))
    a, b = ours[:n, 0].astype(np.float64), theirs[:n, 0].astype(np.float64)
    margin = taps + 10
    window = slice(margin, min(n - margin, margin + 20000))
    best = min(range(-taps, taps + 1),
               key=lambda lag: np.abs(a[window] - b[window.start + lag:window.stop + lag]).max())
    core = slice(margin, n - margin)
    shifted = theirs[core.start + best:core.stop + best].astype(np.int32)
    return best, int(np.abs(ours[core].astype(np.int32) - shifted).max())


def sox_rows(args, tmp: Path) -> None:
    import soundfile

    if not shutil.which("sox"):
        skip("SoX (apt-get install sox)")
        return
    seconds = 20 if args.quick else 180
    rng = np.random.default_rng(0)
    # Band-limited noise at a moderate level, so neither tool clips.
    audio = np.clip(rng.standard_normal((seconds * 44100, 2)) * 0.15, -1, 1)
    src = tmp / "in.wav"
    _write_wav(src, audio)
    fir = np.hanning(101) / np.hanning(101).sum()
    response = rng.standard_normal(88200) * np.exp(-np.arange(88200) / 20000.0)
    response /= np.abs(response).sum() / 4  # peak gain bounded well inside 16 bits for this input
    for label, kernel in (("101-tap FIR", fir), ("88200-tap response", response)):
        name = f"whole process: {label}, {seconds} s stereo WAV"
        if args.only not in name:
            continue
        # SoX's fir is a convolution: --convolve makes convcli compute the same one from the same file.
        coefs = tmp / f"coefs{kernel.size}.txt"
        np.savetxt(coefs, kernel, fmt="%.10g")
        ours_cmd = [sys.executable, "-m", "convcli", "filter", str(src), "-k", str(coefs), "--convolve",
                    "-o", str(tmp / "convcli.wav")]
        sox_cmd = ["sox", str(src), str(tmp / "sox.wav"), "fir", str(coefs)]
        contenders = {"convcli": ours_cmd, "SoX": sox_cmd}
        for cmd in contenders.values():
            bench_whole_process.timed(cmd, None, tmp)
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(args.repeats):
            for k, cmd in contenders.items():
                times[k].append(bench_whole_process.timed(cmd, None, tmp)[0])
        ours, _ = soundfile.read(tmp / "convcli.wav", dtype="int16")
        theirs, _ = soundfile.read(tmp / "sox.wav", dtype="int16")
        lag, diff = _aligned_diff(ours, theirs, kernel.size)
        # Both round a float result to 16 bits: one step apart at most, two with FFT noise.
        agree = f"max|d|={diff} (16-bit), SoX lag {lag}" + (" DISAGREE" if diff > 2 else "")
        add(name, "SoX", statistics.median(times["convcli"]), statistics.median(times["SoX"]), agree)


# --------------------------------------------------------------------------- classify
def classify_rows(args) -> None:
    python = args.peer_python or sys.executable
    present = {}
    for backend, label, module in (("pytorch", "PyTorch eager", "torch"), ("onnxruntime", "onnxruntime", "onnxruntime")):
        probe = subprocess.run([python, "-c", f"import {module}, efficientnet_lite_pytorch"], capture_output=True)
        if probe.returncode:
            skip(label, f"not importable by {python} (try --peer-python /tmp/refenv/bin/python)")
        else:
            present[backend] = label
    if not present:
        return
    repeats = 5 if args.quick else 30

    def measure(backend: str) -> dict:
        # Each backend in its own process (bench_classify's --backend), so peak memory is its own.
        env = {**os.environ, **({"OPENBLAS_NUM_THREADS": "1"} if backend == "convcli" else {})}
        # The peers' interpreter decodes the photos with convcli's own decoder, from this checkout.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        out = subprocess.run([sys.executable if backend == "convcli" else python, bench_classify.__file__,
                              "--backend", backend, "--repeats", str(repeats)],
                             capture_output=True, text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    ours = measure("convcli")
    for backend, label in present.items():
        theirs = measure(backend)
        agree = "top-5 same" if theirs["top5"] == ours["top5"] else f"top-5 differ {theirs['top5']}"
        add("EfficientNet-Lite0 batch 1", label, ours["latency_ms"] / 1e3, theirs["latency_ms"] / 1e3, agree)
        add("EfficientNet-Lite0 batch 8", label, 8 / ours["throughput"], 8 / theirs["throughput"], agree)


# --------------------------------------------------------------------------- batch
def batch_rows(args, tmp: Path) -> None:
    if not (shutil.which("mogrify") and shutil.which("convert")):
        skip("ImageMagick mogrify (apt-get install imagemagick)")
        return
    count = 20 if args.quick else 200
    src = tmp / "batch"
    src.mkdir()
    paths = bench_batch.make_pngs(src, count)
    ours_cmd = [sys.executable, "-m", "convcli", "filter", str(src), "-o", str(tmp / "batch_out"), "-k", "box:5",
                "-j", "2", "-q"]
    (tmp / "mog").mkdir()
    mog_cmd = ["mogrify", "-path", str(tmp / "mog"), *bench_batch.MAGICK_BOX5, *map(str, paths)]
    times: dict[str, list[float]] = {"convcli": [], "mogrify": []}
    for _ in range(max(1, args.repeats)):
        shutil.rmtree(tmp / "batch_out", ignore_errors=True)
        times["convcli"].append(bench_batch.timed(ours_cmd))
        times["mogrify"].append(bench_batch.timed(mog_cmd))
    first = paths[0].name
    # The 2-pixel border is left out: ImageMagick pads its edges its own way.
    a = bench_whole_process.pixels(tmp / "batch_out" / first)[2:-2, 2:-2]
    b = bench_whole_process.pixels(tmp / "mog" / first)[2:-2, 2:-2]
    add(f"batch: {count} PNGs 640x480, box 5x5, -j 2", "ImageMagick mogrify", statistics.median(times["convcli"]),
        statistics.median(times["mogrify"]), f"max|d|={int(np.abs(a - b).max())} (8-bit, interior)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run of seconds")
    parser.add_argument("--only", default="", help="only workloads whose name contains this")
    parser.add_argument("--peer-python", help="interpreter with PyTorch/onnxruntime for the classify peers "
                        "(default: this one), e.g. /tmp/refenv/bin/python")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores, {sys.platform}, python {sys.version.split()[0]}, "
          f"load {os.getloadavg()[0]:.1f}; {'quick' if args.quick else 'full'} inputs, medians of {args.repeats}")
    print(f"  {'workload':50s} {'peer':20s} {'convcli ms':>9s} {'peer ms':>9s} {'ratio':>6s}  agree")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="convcli-suite-") as tmp:
        tmp = Path(tmp)
        engine_rows(args)
        rank_rows(args, tmp)
        if args.only in "whole process: gaussian PNG" or "PNG" in args.only:
            png_rows(args, tmp)
        if not args.only or "JPEG" in args.only:
            photo_rows(args, tmp)
        sox_rows(args, tmp)
        if not args.only or "EfficientNet" in args.only:
            classify_rows(args)
        if not args.only or "batch" in args.only:
            batch_rows(args, tmp)
    print(f"\n{'workload':50s} {'peer':20s} {'convcli / peer':>14s}  agree")
    for workload, peer, ours, theirs, agree in ROWS:
        print(f"{workload:50s} {peer:20s} {ours / theirs:14.2f}  {agree}")
    for line in SKIPPED:
        print(line)
    if not args.only or "regret" in args.only:
        print(regret_line(args))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 1 if any("DISAGREE" in r[4] for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
