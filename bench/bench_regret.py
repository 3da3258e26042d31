"""How far ``auto`` is from the fastest method, over a grid of inputs, kernels and geometries.

    python bench/bench_regret.py [--cases 120] [--repeats 5] [--seed 0] [--quick] [--json FILE]

For each case of a deterministic sample of the grid (1-D signals, images and
volumes from small to large; kernels of 3 to 101 taps, separable or not,
boxes; stride 1-4, dilation 1-3; uint8, float32 and float64 samples; 1 to 4
channels), every method that can compute it is timed (best of
``--repeats``) and so is ``auto``.  The regret of the case is auto's time
over the fastest method's; the report gives the median and the worst
regret, the share of cases over 1.2, and the worst cases with what auto
picked and what was faster.  Every forced method's output is checked
against auto's before it counts.

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
            "channels": int(rng.choice([1, 1, 3, 4])) if nd < 3 else int(rng.choice([1, 1, 2])),
        }
        if (case["taps"] - 1) * case["dilation"] + 1 > min(shape):
            case["dilation"] = 1
        cases.append(case)
    return cases


def materialise(case: dict, seed: int):
    """The input and the kernel of a case."""
    rng = np.random.default_rng(seed)
    shape = case["shape"] + ((case["channels"],) if case["channels"] > 1 else ())
    if case["dtype"] == "uint8":
        x = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        x = rng.random(shape, dtype=np.float64).astype(case["dtype"])
    nd, k = len(case["shape"]), case["taps"]
    if case["kind"] == "box":
        kernel = np.full((k,) * nd, 1.0 / k ** nd)
    elif case["kind"] == "separable":
        factors = [rng.random(k) + 0.1 for _ in range(nd)]
        kernel = factors[0]
        for f in factors[1:]:
            kernel = np.multiply.outer(kernel, f)
    else:
        kernel = rng.standard_normal((k,) * nd)
    return x, kernel


def measure(case: dict, repeats: int, seed: int) -> dict:
    """Time auto and every method that computes the case (each warmed once, then in turns); best of ``repeats``."""
    x, kernel = materialise(case, seed)
    geometry = {"stride": case["stride"], "dilation": case["dilation"], "padding": "same",
                "channel_axis": -1 if case["channels"] > 1 else None}
    plan = make_plan(x.shape, kernel, x_dtype=x.dtype, **geometry)
    costs = plan.choice.costs
    reference = correlate(x, kernel, **geometry)  # warms auto's path
    scale = float(np.abs(reference).max()) or 1.0
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
        if estimate is None and time.perf_counter() - start > ONE_RUN_LIMIT:
            continue
        if np.abs(out.astype(np.float64) - reference).max() <= 1e-3 * scale:
            runs[method] = run
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):  # contenders take turns: a slow stretch of the machine hits them all
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    auto_time = best.pop("auto")
    fastest = min(best, key=best.get) if best else plan.method
    quickest = best[fastest] if best else auto_time
    return {**case, "auto": plan.method, "auto_s": auto_time, "fastest": fastest, "fastest_s": quickest,
            "regret": auto_time / quickest if quickest > 0 else 1.0, "times": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="write every case's figures as JSON")
    args = parser.parse_args()
    rows = []
    for i, case in enumerate(grid(args.cases, args.seed, args.quick)):
        row = measure(case, args.repeats, args.seed + i)
        rows.append(row)
        print(f"{i:4d} {len(row['shape'])}-D {'x'.join(map(str, row['shape'])):>14} c{row['channels']} "
              f"{row['dtype']:7} {row['kind']:9} k{row['taps']:<3} s{row['stride']} d{row['dilation']}  "
              f"auto {row['auto']:9} {row['auto_s'] * 1e3:9.2f} ms  best {row['fastest']:9} "
              f"{row['fastest_s'] * 1e3:9.2f} ms  regret {row['regret']:.2f}", flush=True)
    regrets = [r["regret"] for r in rows]
    print(f"\n{len(rows)} cases: median regret {statistics.median(regrets):.2f}, worst {max(regrets):.2f}, "
          f"over 1.2: {sum(r > 1.2 for r in regrets)} ({100 * sum(r > 1.2 for r in regrets) / len(rows):.0f} %)")
    for r in sorted(rows, key=lambda r: -r["regret"])[:8]:
        print(f"  worst: {len(r['shape'])}-D {r['shape']} {r['dtype']} {r['kind']} k{r['taps']} "
              f"s{r['stride']} d{r['dilation']} c{r['channels']}: auto {r['auto']} {r['auto_s'] * 1e3:.2f} ms, "
              f"{r['fastest']} {r['fastest_s'] * 1e3:.2f} ms ({r['regret']:.2f}x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
