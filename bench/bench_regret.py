"""How far ``auto`` is from the fastest method, over a grid of inputs, kernels and geometries.

    python bench/bench_regret.py [--cases 120] [--repeats 5] [--seed 0] [--quick] [--json FILE]

For each case of a deterministic sample of the grid (1-D signals, images and
volumes from small to large; kernels of 3 to 101 taps, separable or not,
boxes; stride 1-4, dilation 1-3; uint8, float32 and float64 samples; 1 to 4
channels), every method that can compute it is timed (best of
``--repeats``) and so is ``auto``.  The regret of the case is auto's time
over the fastest method's; the report gives the median and the worst
regret, the share of cases over 1.2, and the worst cases with what auto
picked and what was faster; then the same for the pick alone (the method
auto chose, forced, over the fastest: planning and run-to-run noise left
out).  Every method's output, auto's included, is checked against a
reference (``direct``, the loop-tested shift-and-add, where the kernel has
under 2000 taps) before it counts.

Methods the cost model expects to be hopeless (over 40 times the best
estimate and over half a second) are not run, so a case takes seconds, not
minutes; a method that has no estimate runs once and stops after 3 s.
``--quick`` shrinks the sizes for a smoke run.  Run it on two trees (with
``PYTHONPATH``) to compare a refit of the cost model with the one before.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import numpy as np

from convcli import correlate
from convcli.engine import METHODS, make_plan
from convcli.errors import ParameterError

SIZES = {  # spatial shapes by dimension, small to large
    1: [(4096,), (65536,), (1 << 20), (1 << 23)],
    2: [(64, 64), (256, 256), (1080, 1920), (2160, 3840), (4320, 7680)],
    3: [(16, 16, 16), (64, 64, 64), (128, 128, 128), (256, 256, 256)],
}
TAPS = {1: [3, 5, 11, 31, 101], 2: [3, 5, 7, 15, 31, 101], 3: [3, 5, 7, 15]}
SKIP_FACTOR = 40.0  # a method estimated this many times the best is not timed...
SKIP_NS = 5e8  # ...when it would also take over half a second
ONE_RUN_LIMIT = 3.0  # seconds: a method without an estimate stops after one run this long
SLOW_RUN = 0.2  # seconds: a method whose first run took this long and over twice another's runs once


def grid(count: int, seed: int, quick: bool) -> list[dict]:
    """A deterministic sample of ``count`` cases, spread over every dimension and size."""
    rng = np.random.default_rng(seed)
    cases = []
    combos = list(itertools.product((1, 2, 3), range(5)))
    while len(cases) < count:
        nd, band = combos[len(cases) % len(combos)]
        sizes = SIZES[nd]
        shape = sizes[min(band, len(sizes) - 1)]
        shape = (shape,) if isinstance(shape, int) else shape
        if quick:
            shape = tuple(max(8, n // 8) for n in shape)
        taps = int(rng.choice(TAPS[nd]))
        if taps > min(shape):
            taps = min(TAPS[nd])
        case = {
            "shape": tuple(shape), "taps": taps, "kind": str(rng.choice(["separable", "random", "box"])),
            "stride": int(rng.choice([1, 1, 2, 3, 4])), "dilation": int(rng.choice([1, 1, 1, 2, 3])),
            "dtype": str(rng.choice(["uint8", "float32", "float32", "float64"])),
            "channels": int(rng.choice([1, 1, 2, 3, 4])) if nd < 3 else int(rng.choice([1, 1, 2])),
        }
        if (case["taps"] - 1) * case["dilation"] + 1 > min(shape):
            case["dilation"] = 1
        cases.append(case)
    return cases


SUITE_SAMPLES = 1080 * 1920 * 4  # up to a 1080p RGBA image: the suite's subset takes seconds, not minutes


def suite_cases() -> list[tuple[int, dict]]:
    """bench_suite's quick regret row: the first case of the default grid of each size up to SUITE_SAMPLES,
    with its index (its seed): 1-D, 2-D and 3-D, small to a 1080p image."""
    picked = {}
    for i, case in enumerate(grid(120, 0, False)):
        if case["channels"] * int(np.prod(case["shape"])) <= SUITE_SAMPLES:
            picked.setdefault(case["shape"], (i, case))
    return list(picked.values())


def materialise(case: dict, seed: int):
    """The input and the kernel of a case."""
    kernel = case_kernel(case, seed)
    rng = np.random.default_rng([seed, 1])
    shape = case["shape"] + ((case["channels"],) if case["channels"] > 1 else ())
    if case["dtype"] == "uint8":
        x = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        x = rng.random(shape, dtype=np.float64).astype(case["dtype"])
    return x, kernel


def case_kernel(case: dict, seed: int) -> np.ndarray:
    """The kernel of a case alone (no input drawn: ``fit_costs.py`` replans its stored timings from it)."""
    rng = np.random.default_rng(seed)
    nd, k = len(case["shape"]), case["taps"]
    if case["kind"] == "box":
        return np.full((k,) * nd, 1.0 / k ** nd)
    if case["kind"] == "separable":
        factors = [rng.random(k) + 0.1 for _ in range(nd)]
        kernel = factors[0]
        for f in factors[1:]:
            kernel = np.multiply.outer(kernel, f)
        return kernel
    return rng.standard_normal((k,) * nd)


def geometry_of(case: dict) -> dict:
    """The keyword arguments of ``correlate`` for a case."""
    return {"stride": case["stride"], "dilation": case["dilation"], "padding": "same",
            "channel_axis": -1 if case["channels"] > 1 else None}


# A method's result counts only within this share of the reference's largest magnitude.
AGREEMENT = 1e-3
DIRECT_REFERENCE_WORK = 5e8  # multiply-adds up to which the reference is direct (about half a second)


def reference(x, kernel, geometry: dict, auto: str) -> np.ndarray:
    """The result every timed method is checked against: ``direct`` where affordable, else not auto's method.

    ``direct`` is held to a literal loop definition by the tests; on larger
    work the FFT (or OpenCV, when auto picked the FFT) is the yardstick, so a
    wrong fast path never checks itself.
    """
    method = "direct"
    if x.size * np.count_nonzero(kernel) / geometry["stride"] ** kernel.ndim > DIRECT_REFERENCE_WORK:
        method = "fft" if auto != "fft" else "opencv" if kernel.ndim > 1 else "toeplitz"
        try:
            make_plan(x.shape, kernel, x_dtype=x.dtype, method=method, **geometry)
        except ParameterError:
            method = "direct"
    return correlate(x, kernel, method=method, **geometry).astype(np.float64)


def agrees(out, expected: np.ndarray) -> bool:
    scale = float(np.abs(expected).max()) or 1.0
    return bool(np.abs(out.astype(np.float64) - expected).max() <= AGREEMENT * scale)


def measure(case: dict, repeats: int, seed: int) -> dict:
    """Time auto and every method that computes the case (each warmed once, then in turns); best of ``repeats``."""
    x, kernel = materialise(case, seed)
    geometry = geometry_of(case)
    plan = make_plan(x.shape, kernel, x_dtype=x.dtype, **geometry)
    costs = plan.choice.costs
    expected = reference(x, kernel, geometry, plan.method)
    auto_agrees = agrees(correlate(x, kernel, **geometry), expected)  # also warms auto's path
    warm = {"auto": 0.0}  # auto is always timed
    runs = {"auto": lambda: correlate(x, kernel, **geometry)}
    floor = min(costs.values()) if costs else None
    for method in METHODS:
        if method == "auto":
            continue
        estimate = costs.get(method)
        if estimate is not None and floor and estimate > SKIP_FACTOR * floor and estimate > SKIP_NS:
            continue
        try:
            make_plan(x.shape, kernel, x_dtype=x.dtype, method=method, **geometry)
        except ParameterError:
            continue  # the method cannot compute this kernel or geometry
        run = (lambda m: lambda: correlate(x, kernel, method=m, **geometry))(method)
        start = time.perf_counter()
        out = run()  # warm-up, and the check that it computes the same thing
        warm[method] = time.perf_counter() - start
        if estimate is None and warm[method] > ONE_RUN_LIMIT:
            continue
        if agrees(out, expected):
            runs[method] = run
    # A method whose one run took over twice another's is not the fastest: that run is its time (an
    # upper bound), and the repeats go to the contenders (a 256^3 volume's slow paths take a minute each).
    quick = min((warm[m] for m in runs if m != "auto"), default=0.0)
    best = {name: warm[name] if warm[name] > max(2 * quick, SLOW_RUN) else float("inf") for name in runs}
    for _ in range(repeats):  # contenders take turns: a slow stretch of the machine hits them all
        for name, run in runs.items():
            if warm[name] > max(2 * quick, SLOW_RUN):
                continue
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    auto_time = best.pop("auto")
    fastest = min(best, key=best.get) if best else plan.method
    quickest = best[fastest] if best else auto_time
    # The pick's regret: the same method forced, so planning and the noise between two runs of one
    # method are left out (on a busy machine those alone reach 1.5-2x on small inputs).
    picked = best.get(plan.method, auto_time)
    return {**case, "auto": plan.method, "auto_s": auto_time, "fastest": fastest, "fastest_s": quickest,
            "regret": auto_time / quickest if quickest > 0 else 1.0,
            "pick_regret": picked / quickest if quickest > 0 else 1.0, "times": best, "auto_agrees": auto_agrees}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="write every case's figures as JSON")
    parser.add_argument("--only", metavar="I,J,...", help="time only these cases of the grid (a rerun of the worst)")
    args = parser.parse_args()
    only = {int(i) for i in args.only.split(",")} if args.only else None
    rows = []
    for i, case in enumerate(grid(args.cases, args.seed, args.quick)):
        if only is not None and i not in only:
            continue
        row = measure(case, args.repeats, args.seed + i)
        rows.append(row)
        print(f"{i:4d} {len(row['shape'])}-D {'x'.join(map(str, row['shape'])):>14} c{row['channels']} "
              f"{row['dtype']:7} {row['kind']:9} k{row['taps']:<3} s{row['stride']} d{row['dilation']}  "
              f"auto {row['auto']:9} {row['auto_s'] * 1e3:9.2f} ms  best {row['fastest']:9} "
              f"{row['fastest_s'] * 1e3:9.2f} ms  regret {row['regret']:.2f}", flush=True)
    regrets = [r["regret"] for r in rows]
    picks = [r["pick_regret"] for r in rows]
    print(f"\n{len(rows)} cases: median regret {statistics.median(regrets):.2f}, worst {max(regrets):.2f}, "
          f"over 1.2: {sum(r > 1.2 for r in regrets)} ({100 * sum(r > 1.2 for r in regrets) / len(rows):.0f} %); "
          f"the method auto picks, forced: median {statistics.median(picks):.2f}, worst {max(picks):.2f}, "
          f"over 1.2: {sum(r > 1.2 for r in picks)}")
    wrong = [r for r in rows if not r["auto_agrees"]]
    if wrong:
        print(f"AUTO DISAGREES with the reference on {len(wrong)} cases: "
              + "; ".join(f"{r['shape']} {r['kind']} k{r['taps']} ({r['auto']})" for r in wrong))
    for r in sorted(rows, key=lambda r: -r["regret"])[:8]:
        print(f"  worst: {len(r['shape'])}-D {r['shape']} {r['dtype']} {r['kind']} k{r['taps']} "
              f"s{r['stride']} d{r['dilation']} c{r['channels']}: auto {r['auto']} {r['auto_s'] * 1e3:.2f} ms, "
              f"{r['fastest']} {r['fastest_s'] * 1e3:.2f} ms ({r['regret']:.2f}x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
