"""Race convcli's engine against scipy.ndimage, OpenCV and FFT/numpy peers in one run.

    python bench/bench_engine.py [--repeats 5] [--quick] [--only NAME] [--method NAME] [--no-process]

Every workload is timed for each contender in the same process; contenders
take turns round by round (a shared 2-core machine slows whole stretches of
time, and turns spread that over everyone), medians of ``--repeats`` rounds
are printed with the ratio convcli / peer (below 1 means convcli is faster),
and every peer's output is checked to agree with convcli's before timing.

Peers are what a scripter would write: scipy.ndimage's dedicated filters
(correlate1d passes for a separable kernel, uniform_filter for a box,
gaussian_filter, correlate otherwise); OpenCV's (Sobel, sepFilter2D, blur,
filter2D; full resolution then subsampled for a stride, a zero-dilated kernel
for a dilation); numpy.convolve per channel and scipy.signal.fftconvolve on
two FFT workers for 1-D and 3-D.  OpenCV is not a dependency of the
benchmark: ``pip install opencv-python-headless`` to race it.

Also printed: peak resident memory of the 3-D gaussian (in a fresh process,
as a multiple of the volume's size) and the whole-process time of
``convcli filter small.npy -k box:3 -o out.npy`` on a 256x256 image.

``--method`` times one strategy instead of ``auto``'s pick (``direct`` or
``separable`` for the numpy shift-and-add, which ``auto`` leaves to OpenCV
where it is installed); rows the strategy cannot compute are skipped.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy import ndimage

from convcli import correlate
from convcli.engine import make_plan
from convcli.errors import ParameterError
from convcli.kernels import resolve


def gaussian_taps(sigma: float = 2.0, radius: int = 8) -> np.ndarray:
    g = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return g / g.sum()


def workloads(quick: bool):
    """(name, signal, kernel, geometry, kind, peers) for every row of the table."""
    rng = np.random.default_rng(0)
    h, w = (540, 960) if quick else (2160, 3840)
    image = rng.random((h, w, 3), dtype=np.float32)
    seconds = 20 if quick else 180
    audio = rng.standard_normal((seconds * 44100, 2), dtype=np.float32)
    side = 96 if quick else 256
    volume = rng.random((side, side, side), dtype=np.float32)
    g = gaussian_taps()
    sobel = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])
    lap3 = resolve("laplacian", ndim=3).weights[0]  # the library's 7-point laplacian
    fir = np.hanning(101) / np.hanning(101).sum()
    response = rng.standard_normal(88200) * np.exp(-np.arange(88200) / 20000.0)
    r7 = rng.random((7, 7))
    yield "sobel-x 3x3, image RGB", image, sobel, {}, "sobel"
    yield "gaussian sigma 2, image RGB", image, np.outer(g, g), {}, "gaussian"
    # A photo as decoded: uint8 samples, float32 results (every peer asked for float32 output).
    yield "gaussian sigma 2, image RGB uint8", (image * 255).astype(np.uint8), np.outer(g, g), {}, "gaussian"
    yield "box 31x31, image RGB", image, np.full((31, 31), 1 / 961), {}, "box"
    yield "random 7x7, image RGB", image, r7, {}, "general"
    yield "random 7x7 stride 2, image RGB", image, r7, {"stride": 2, "padding": 3}, "general"
    yield "random 7x7 dilation 2, image RGB", image, r7, {"dilation": 2}, "general"
    yield "101-tap FIR, stereo audio", audio, fir, {}, "fir"
    yield "88200-tap response, stereo audio", audio, response, {}, "fir"
    yield "laplacian 3x3x3, volume", volume, lap3, {}, "general"
    yield "gaussian sigma 2, volume", volume, np.multiply.outer(np.outer(g, g), g), {}, "gaussian"
    yield "random 7x7x7, volume", volume, rng.random((7, 7, 7)), {}, "general"


# --------------------------------------------------------------------------- peers
def _dilated(kernel, d):
    if d == 1:
        return kernel
    out = np.zeros([d * (k - 1) + 1 for k in kernel.shape], kernel.dtype)
    out[tuple(slice(None, None, d) for _ in kernel.shape)] = kernel
    return out


def _subsample(out, stride, nd):
    return out[(slice(None, None, stride),) * nd] if stride > 1 else out


def scipy_peer(x, kernel, opts, kind):
    """scipy.ndimage as a scripter writes it; channels last are a size-1 kernel axis."""
    nd = kernel.ndim
    extra = x.ndim - nd
    stride, d = opts.get("stride", 1), opts.get("dilation", 1)
    if kind == "fir":
        return None
    if kind == "box":
        return lambda: ndimage.uniform_filter(x, size=kernel.shape + (1,) * extra, mode="mirror")
    if kind == "gaussian":
        return lambda: ndimage.gaussian_filter(x, sigma=(2.0,) * nd + (0,) * extra, truncate=4.0, mode="mirror",
                                               output=np.float32)
    if kind == "sobel":
        def sob():
            out = ndimage.correlate1d(x, [1.0, 2.0, 1.0], axis=0, mode="mirror")
            return ndimage.correlate1d(out, [-1.0, 0.0, 1.0], axis=1, mode="mirror")
        return sob
    k = _dilated(kernel, d).reshape(_dilated(kernel, d).shape + (1,) * extra)
    return lambda: _subsample(ndimage.correlate(x, k, mode="mirror"), stride, nd)


def opencv_peer(cv2, x, kernel, opts, kind):
    if cv2 is None or kernel.ndim != 2:
        return None
    stride, d = opts.get("stride", 1), opts.get("dilation", 1)
    border = cv2.BORDER_REFLECT_101
    if kind == "sobel":
        return lambda: cv2.Sobel(x, -1, 1, 0, ksize=3, borderType=border)
    if kind == "gaussian":
        g = gaussian_taps().astype(np.float32)
        return lambda: cv2.sepFilter2D(x, cv2.CV_32F, g, g, borderType=border)  # float32 from any samples
    if kind == "box":
        return lambda: cv2.blur(x, kernel.shape[::-1], borderType=border)
    k = _dilated(kernel, d).astype(np.float32)
    return lambda: _subsample(cv2.filter2D(x, -1, k, borderType=border), stride, 2)


def fft_peer(x, kernel, opts, kind):
    """scipy.signal.fftconvolve on two FFT workers, channels last broadcast."""
    if kernel.ndim == 2:
        return None
    from scipy import fft, signal

    span = [(k - 1) // 2 for k in kernel.shape]  # the "same" rule puts the odd sample after
    width = [(s, k - 1 - s) for s, k in zip(span, kernel.shape)] + [(0, 0)] * (x.ndim - kernel.ndim)
    flipped = kernel[(slice(None, None, -1),) * kernel.ndim].astype(np.float32)
    flipped = flipped.reshape(flipped.shape + (1,) * (x.ndim - kernel.ndim))

    def run():
        padded = np.pad(x, width, mode="reflect")
        with fft.set_workers(2):
            return signal.fftconvolve(padded, flipped, mode="valid", axes=tuple(range(kernel.ndim)))
    return run


def numpy_peer(x, kernel, opts, kind):
    if kind != "fir" or kernel.size > 1000:
        return None
    half = (kernel.size - 1) // 2
    flipped = kernel[::-1].astype(np.float32)

    def run():
        padded = np.pad(x, ((half, kernel.size - 1 - half), (0, 0)), mode="reflect")
        return np.stack([np.convolve(padded[:, c], flipped, mode="valid") for c in range(x.shape[1])], axis=1)
    return run


# --------------------------------------------------------------------------- timing
def race(contenders: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each contender, contenders taking turns round by round."""
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory(side: int) -> tuple[float, float]:
    """Peak RSS of the 3-D gaussian in fresh processes, as multiples of the volume's bytes.

    First the engine call that returns a new array (``correlate(v, k)``), then
    the user's whole ``convcli filter vol.npy -k gaussian:sigma=2 -o out.npy``
    (which filters the samples it read in their own memory).
    """
    # VmHWM of the child, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across exec.
    hwm = "hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    call = (
        "import numpy as np; from convcli import correlate\n"
        f"v = np.random.default_rng(0).random(({side},) * 3, dtype=np.float32)\n"
        "g = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2); g /= g.sum()\n"
        "out = correlate(v, np.multiply.outer(np.outer(g, g), g))\n" + hwm + "print(hwm * 1024 / v.nbytes)\n"
    )
    ratios = [float(subprocess.run([sys.executable, "-c", call], capture_output=True, text=True, check=True).stdout)]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "vol.npy"), os.path.join(tmp, "out.npy")
        np.save(src, np.random.default_rng(0).random((side,) * 3, dtype=np.float32))
        command = (
            "import sys\nfrom convcli.cli import main\n"
            f"sys.argv = ['convcli', 'filter', {src!r}, '-k', 'gaussian:sigma=2', '-o', {dst!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"  # the command closes stdout
            + hwm + f"sys.stderr.write(str(hwm * 1024 / {side ** 3 * 4}))\n"
        )
        done = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True)
        ratios.append(float(done.stderr))
    return ratios[0], ratios[1]


def whole_process(repeats: int) -> float:
    """Median seconds of ``convcli filter small.npy -k box:3 -o out.npy`` on a 256x256 image."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "small.npy")
        np.save(src, np.random.default_rng(0).random((256, 256), dtype=np.float32))
        cmd = [sys.executable, "-m", "convcli", "filter", src, "-k", "box:3", "-o", os.path.join(tmp, "out.npy")]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--only", default="", help="run only workloads whose name contains this")
    parser.add_argument("--method", default="auto", help="convcli's strategy (default auto); rows it cannot run "
                        "are skipped")
    parser.add_argument("--no-process", action="store_true", help="skip the memory and whole-process rows")
    args = parser.parse_args()
    try:
        import cv2
    except ImportError:
        cv2 = None
        print("OpenCV not installed (pip install opencv-python-headless): its column is skipped")
    columns = ("scipy", "opencv", "fft", "numpy")
    header = f"{'workload':36s} {'convcli':>9s}" + "".join(f" {c:>9s} {'ratio':>6s}" for c in columns) + "  method"
    print(header)
    for name, x, kernel, opts, kind in workloads(args.quick):
        if args.only not in name:
            continue
        channel_axis = -1 if x.ndim > kernel.ndim else None
        ours = lambda: correlate(x, kernel, channel_axis=channel_axis, pad_mode="reflect",  # noqa: E731
                                 method=args.method, **opts)
        try:
            method = make_plan(x.shape, kernel, channel_axis=channel_axis, x_dtype=x.dtype, method=args.method,
                               **opts).method
        except ParameterError as exc:
            print(f"{name:36s} skipped: {exc}", flush=True)
            continue
        peers = {
            "scipy": scipy_peer(x, kernel, opts, kind),
            "opencv": opencv_peer(cv2, x, kernel, opts, kind),
            "fft": fft_peer(x, kernel, opts, kind),
            "numpy": numpy_peer(x, kernel, opts, kind),
        }
        peers = {k: v for k, v in peers.items() if v is not None}
        expected = ours()
        scale = float(np.abs(kernel).sum())
        for peer, fn in peers.items():
            np.testing.assert_allclose(expected, fn(), rtol=1e-3, atol=1e-3 * scale, err_msg=f"{name}: {peer}")
        slow = {"scipy"} if not args.quick and kind == "general" and kernel.ndim == 3 and kernel.size > 27 else set()
        medians = race({"convcli": ours, **{k: v for k, v in peers.items() if k not in slow}}, args.repeats)
        medians.update(race({k: peers[k] for k in slow}, 1))  # seconds each: one run is enough
        row = f"{name:36s} {medians['convcli'] * 1e3:7.1f}ms"
        for column in columns:
            if column in medians:
                row += f" {medians[column] * 1e3:7.1f}ms {medians['convcli'] / medians[column]:6.2f}"
            else:
                row += f" {'-':>9s} {'-':>6s}"
        print(row + f"  {method}", flush=True)
    if not args.no_process and not args.only:
        side = 96 if args.quick else 256
        call, command = peak_memory(side)
        print(f"peak RSS, 3-D gaussian on {side}^3 float32 (fresh process): correlate(v, k) {call:.2f}x the volume, "
              f"convcli filter vol.npy {command:.2f}x")
        print(f"whole process, convcli filter small.npy (256x256) -k box:3: {whole_process(args.repeats) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
