"""Race convcli's rank filters, morphology and pooling against OpenCV, scipy.ndimage and numpy in one run.

    python bench/bench_rank.py [--repeats 5] [--quick] [--only NAME]

Every row times ``convcli.apply(x, SPEC, ...)`` (the in-process call the
CLI makes) and its peers in the same process, taking turns round by round;
medians of ``--repeats`` rounds and the ratio convcli / peer (below 1:
convcli is faster) are printed, and every peer's output is checked to
equal convcli's before timing (the border rule chosen to be the peer's:
OpenCV's medianBlur replicates the edge, scipy's default mirrors).
scipy's sorting median is timed once per row (seconds a call).

Peers: OpenCV's ``medianBlur``, ``erode`` and ``dilate`` (one call, as a
script would make it); scipy.ndimage's ``median_filter``, ``minimum_filter``,
``maximum_filter``; for pooling, numpy's reshape-and-max (what most
scripts write), the maximum of the four strided views, and a plain copy of
the input (``np.copyto``: how fast memory moves on this machine).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import ndimage

from convcli import apply
from convcli.kernels import resolve

# Rows whose scipy peer takes many seconds: timed once.
SLOW_SCIPY = ("median",)


def workloads(quick: bool):
    """(name, spec, input, apply keywords, peers) for every row."""
    import cv2

    rng = np.random.default_rng(0)
    h, w = (540, 960) if quick else (2160, 3840)
    u8 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    f32 = rng.random((h, w, 3), dtype=np.float32)
    side = 96 if quick else 256
    volume = rng.random((side,) * 3, dtype=np.float32)
    seconds = 20 if quick else 180
    audio = rng.standard_normal((seconds * 44100, 2)).astype(np.float32)
    rgb = dict(channel_axis=-1)
    k15 = np.ones((15, 15), np.uint8)

    yield ("median 5x5, image RGB uint8", "median:5", u8, dict(rgb, pad_mode="replicate"), {
        "OpenCV": lambda: cv2.medianBlur(u8, 5),
        "scipy": lambda: ndimage.median_filter(u8, size=(5, 5, 1), mode="nearest")})
    yield ("median 31x31, image RGB uint8", "median:31", u8, dict(rgb, pad_mode="replicate"), {
        "OpenCV": lambda: cv2.medianBlur(u8, 31)})
    yield ("median 5x5, image RGB float32", "median:5", f32, dict(rgb, pad_mode="replicate"), {
        "OpenCV": lambda: cv2.medianBlur(f32, 5),
        "scipy": lambda: ndimage.median_filter(f32, size=(5, 5, 1), mode="nearest")})
    yield ("median 3x3, image RGB float32", "median:3", f32, dict(rgb, pad_mode="replicate"), {
        "OpenCV": lambda: cv2.medianBlur(f32, 3),
        "scipy": lambda: ndimage.median_filter(f32, size=(3, 3, 1), mode="nearest")})
    yield ("erode 15x15, image RGB uint8", "erode:15", u8, dict(rgb, pad_mode="replicate"), {
        "OpenCV": lambda: cv2.erode(u8, k15, borderType=cv2.BORDER_REPLICATE),
        "scipy": lambda: ndimage.grey_erosion(u8, size=(15, 15, 1), mode="nearest")})
    yield ("dilate 15x15, image RGB uint8", "dilate:15", u8, dict(rgb, pad_mode="replicate"), {
        "OpenCV": lambda: cv2.dilate(u8, k15, borderType=cv2.BORDER_REPLICATE),
        "scipy": lambda: ndimage.grey_dilation(u8, size=(15, 15, 1), mode="nearest")})
    yield ("erode 15x15, image RGB float32", "erode:15", f32, dict(rgb, pad_mode="replicate"), {
        "OpenCV": lambda: cv2.erode(f32, k15, borderType=cv2.BORDER_REPLICATE),
        "scipy": lambda: ndimage.grey_erosion(f32, size=(15, 15, 1), mode="nearest")})
    yield ("open disk 3, image RGB uint8", "open:disk=3", u8, dict(rgb, pad_mode="replicate"), {
        "OpenCV": lambda: cv2.morphologyEx(u8, cv2.MORPH_OPEN, _disk(3), borderType=cv2.BORDER_REPLICATE),
        "scipy": lambda: ndimage.grey_opening(u8, footprint=_disk(3)[..., None].astype(bool), mode="nearest")})
    yield ("median 3x3x3, volume", "median:3", volume, {}, {
        "scipy": lambda: ndimage.median_filter(volume, size=3, mode="mirror")})
    yield ("min 7x7x7, volume", "min:7", volume, {}, {
        "scipy": lambda: ndimage.minimum_filter(volume, size=7, mode="mirror")})
    yield ("max 7x7x7, volume", "max:7", volume, {}, {
        "scipy": lambda: ndimage.maximum_filter(volume, size=7, mode="mirror")})
    yield ("median 5 taps, stereo audio", "median:5", audio, dict(channel_axis=-1), {
        "scipy": lambda: ndimage.median_filter(audio, size=(5, 1), mode="mirror")})
    even = f32[: h // 2 * 2, : w // 2 * 2]
    yield ("maxpool 2x2 stride 2, image RGB float32", "maxpool:2", even, rgb, {
        "numpy reshape-max": lambda: even.reshape(h // 2, 2, w // 2, 2, 3).max(axis=(1, 3)),
        "numpy strided views": lambda: np.maximum(np.maximum(even[0::2, 0::2], even[0::2, 1::2]),
                                                  np.maximum(even[1::2, 0::2], even[1::2, 1::2])),
        "memory copy": _copy(even)})
    yield ("avgpool 2x2 stride 2, image RGB float32", "avgpool:2", even, rgb, {
        "numpy reshape-mean": lambda: even.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))})


def _algorithm(plan) -> str:
    """What ran: OpenCV's function or numpy's algorithm (a morphology's last step)."""
    plan = getattr(plan, "outer", plan)
    return f"{plan.method} {getattr(plan, 'algorithm', 'strided views')}"


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def _copy(x: np.ndarray):
    target = np.empty_like(x)
    return lambda: np.copyto(target, x)


def race(contenders: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each contender, contenders taking turns round by round."""
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--only", default="", help="run only workloads whose name contains this")
    args = parser.parse_args()
    print(f"{'workload':42s} {'convcli':>9s}  peers (time, convcli / peer)  algorithm")
    for name, spec, x, kwargs, peers in workloads(args.quick):
        if args.only not in name:
            continue
        ours = lambda: apply(x, spec, **kwargs)  # noqa: E731
        expected = ours()
        for peer, fn in peers.items():
            if peer == "memory copy":
                continue
            got = fn()
            np.testing.assert_allclose(expected, got.reshape(expected.shape), rtol=1e-6, atol=1e-6,
                                       err_msg=f"{name}: {peer}")
        slow = {p for p in peers if p == "scipy" and spec.startswith(SLOW_SCIPY)}
        medians = race({"convcli": ours, **{p: f for p, f in peers.items() if p not in slow}}, args.repeats)
        medians.update(race({p: peers[p] for p in slow}, 1))
        nd = x.ndim - ("channel_axis" in kwargs)
        kernel = resolve(spec, ndim=nd)
        how = _algorithm(kernel.plan(x.shape, x.dtype, **kwargs))
        row = f"{name:42s} {medians['convcli'] * 1e3:7.1f}ms "
        row += "  ".join(f"{p} {medians[p] * 1e3:.1f}ms ({medians['convcli'] / medians[p]:.2f})" for p in peers)
        print(f"{row}  {how}", flush=True)


if __name__ == "__main__":
    main()
