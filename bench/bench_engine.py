"""Race convcli's engine against scipy.ndimage (and OpenCV when installed) in one run.

    python bench/bench_engine.py [--repeats 5] [--quick] [--only NAME]

Every workload is timed for each contender in the same process, medians of
``--repeats`` runs are printed with the ratio convcli / peer (below 1 means
convcli is faster), and the outputs are checked to agree before timing.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import ndimage

from convcli import correlate


def _timed(fn, repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up, and the result for the agreement check
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def workloads(quick: bool):
    rng = np.random.default_rng(0)
    h, w = (540, 960) if quick else (2160, 3840)
    image = rng.random((h, w, 3), dtype=np.float32)
    seconds = 20 if quick else 180
    audio = rng.standard_normal((seconds * 44100, 2), dtype=np.float32)
    side = 96 if quick else 256
    volume = rng.random((side, side, side), dtype=np.float32)
    g = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2)
    g /= g.sum()
    sobel = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])
    lap3 = np.zeros((3, 3, 3))
    lap3[1, 1, :] = lap3[1, :, 1] = lap3[:, 1, 1] = 1.0
    lap3[1, 1, 1] = -6.0
    fir = np.hanning(101) / np.hanning(101).sum()
    yield "sobel-x 3x3, image RGB", image, sobel, {}
    yield "gaussian sigma 2 (17x17), image RGB", image, np.outer(g, g), {}
    yield "box 31x31, image RGB", image, np.full((31, 31), 1 / 961), {}
    yield "random 7x7, image RGB", image, rng.random((7, 7)), {}
    yield "random 7x7 stride 2, image RGB", image, rng.random((7, 7)), {"stride": 2, "padding": 3}
    yield "random 7x7 dilation 2, image RGB", image, rng.random((7, 7)), {"dilation": 2}
    yield "101-tap FIR, stereo audio", audio, fir, {}
    yield "laplacian 3x3x3, volume", volume, lap3, {}
    yield "gaussian sigma 2, volume", volume, np.multiply.outer(np.outer(g, g), g), {}
    yield "random 7x7x7, volume", volume, rng.random((7, 7, 7)), {}


def scipy_version(x, kernel, opts):
    stride = opts.get("stride", 1)
    d = opts.get("dilation", 1)
    if d > 1:
        dil = np.zeros([d * (k - 1) + 1 for k in kernel.shape])
        dil[tuple(slice(None, None, d) for _ in kernel.shape)] = kernel
        kernel = dil
    if x.ndim > kernel.ndim:  # channels last: filter each channel
        out = np.stack([ndimage.correlate(x[..., c], kernel, mode="mirror") for c in range(x.shape[-1])], axis=-1)
    else:
        out = ndimage.correlate(x, kernel, mode="mirror")
    return out[(slice(None, None, stride),) * kernel.ndim] if stride > 1 else out


def opencv_version(cv2, x, kernel, opts):
    stride = opts.get("stride", 1)
    d = opts.get("dilation", 1)
    if d > 1:
        dil = np.zeros([d * (k - 1) + 1 for k in kernel.shape], np.float32)
        dil[::d, ::d] = kernel
        kernel = dil
    out = cv2.filter2D(x, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    return out[::stride, ::stride] if stride > 1 else out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--only", default="", help="run only workloads whose name contains this")
    args = parser.parse_args()
    try:
        import cv2
    except ImportError:
        cv2 = None
        print("OpenCV not installed (pip install opencv-python-headless): skipped")
    print(f"{'workload':40s} {'convcli':>9s} {'scipy':>9s} {'ratio':>7s} {'opencv':>9s} {'ratio':>7s}  method")
    for name, x, kernel, opts in workloads(args.quick):
        if args.only not in name:
            continue
        channel_axis = -1 if x.ndim > kernel.ndim else None
        ours = lambda: correlate(x, kernel, channel_axis=channel_axis, pad_mode="reflect", **opts)  # noqa: E731
        from convcli.engine import make_plan

        method = make_plan(x.shape, kernel, channel_axis=channel_axis, **opts).method
        t_ours, r_ours = _timed(ours, args.repeats)
        reps = 1 if "7x7x7" in name and not args.quick else args.repeats
        t_scipy, r_scipy = _timed(lambda: scipy_version(x, kernel, opts), reps)
        np.testing.assert_allclose(r_ours, r_scipy, rtol=1e-3, atol=1e-3 * float(np.abs(kernel).sum()))
        row = f"{name:40s} {t_ours * 1e3:8.1f}ms {t_scipy * 1e3:8.1f}ms {t_ours / t_scipy:7.2f}"
        if cv2 is not None and kernel.ndim == 2:
            t_cv, r_cv = _timed(lambda: opencv_version(cv2, x, kernel, opts), args.repeats)
            np.testing.assert_allclose(r_ours, r_cv, rtol=1e-3, atol=1e-3 * float(np.abs(kernel).sum()))
            row += f" {t_cv * 1e3:8.1f}ms {t_ours / t_cv:7.2f}"
        else:
            row += f" {'-':>9s} {'-':>7s}"
        print(row + f"  {method}", flush=True)


if __name__ == "__main__":
    main()
