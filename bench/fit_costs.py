"""Refit auto's cost model: time every strategy on a grid of inputs, fit the nanoseconds per unit of work.

    python bench/fit_costs.py [--cases 200] [--seed 7] [--repeats 3] [--part K/N] [--measurements FILE...]
                              [--write] [--keep-imports]

For each case of a deterministic grid (``bench_regret.grid``: 1-D signals,
images and volumes from 64 samples a side to 8K, kernels of 3 to 101 taps,
separable or not, boxes, stride 1-4, dilation 1-3, uint8/float32/float64,
1-4 channels; another seed than bench_regret's, so the regret that script
measures is not on the data fitted here), every strategy that can compute
it is timed (best of ``--repeats``, the strategies taking turns), and what
each does is counted (:func:`convcli.engine.costs.features`).  Then, per
strategy, the nanoseconds of each unit are fitted (by non-negative least
squares on the relative error where the timings pin every unit down, else
the strategy's units scaled by one factor: :func:`fit`), then each strategy's units are scaled
together (0.8x-1.25x) where that lowers the regret of the picks (:func:`tune`: the ranking between
strategies is what auto needs), and the model's regret on the grid (the
measured time of the strategy it picks over the fastest one's) is printed
for the table in the tree and the fitted one.  ``--write`` rewrites
``convcli/engine/cost_table.py``.  ``--measurements FILE`` keeps the timings
(read back if FILE exists: refit without timing again); a long fit runs in
parts, ``--part 0/4 --measurements p0.json`` then ``1/4``... and the fit
reads them all back: ``--measurements p0.json p1.json p2.json p3.json``.
The timings hold no counts: each case is planned again at fit time, so the
counts are those of the model being fitted.

Import costs (OpenCV, scipy.fft) are not in the grid's timings (every
strategy is warmed first); they are timed apart, as whole interpreters
importing the library less one that does not.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_regret import agrees, case_kernel, geometry_of, grid, materialise, reference  # noqa: E402

from convcli import correlate  # noqa: E402
from convcli.engine import METHODS, make_plan  # noqa: E402
from convcli.engine import costs  # noqa: E402
from convcli.errors import ParameterError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "convcli" / "engine" / "cost_table.py"
SKIP_FACTOR = 20.0  # a strategy estimated this many times the best...
SKIP_NS = 1e9  # ...and over this long is not timed (a 256^3 volume by direct: 85 s)
LONG_RUN = 2.0  # seconds: a strategy this slow is timed once


def measure(case: dict, seed: int, repeats: int) -> dict:
    """Every strategy's best time on one case (nanoseconds), and the strategies auto weighs."""
    x, kernel = materialise(case, seed)
    geometry = geometry_of(case)
    correlate(x, kernel, **geometry)  # loads what auto uses
    plan = make_plan(x.shape, kernel, x_dtype=x.dtype, **geometry)
    candidates = list(plan.choice.costs)
    floor = min(plan.choice.costs.values())
    expected = reference(x, kernel, geometry, plan.method)
    runs, once = {}, {}
    for method in candidates:  # what auto weighs; forced, the others may run another path than counted
        try:
            make_plan(x.shape, kernel, x_dtype=x.dtype, method=method, **geometry)
        except ParameterError:
            continue
        estimate = plan.choice.costs.get(method)
        if estimate is not None and estimate > SKIP_FACTOR * floor and estimate > SKIP_NS:
            continue
        run = (lambda m: lambda: correlate(x, kernel, method=m, **geometry))(method)
        start = time.perf_counter()
        out = run()
        took = time.perf_counter() - start
        if not agrees(out, expected):
            continue  # disagrees (a NaN spread, a wrong path): not a contender
        (once if took > LONG_RUN else runs)[method] = took if took > LONG_RUN else run
    best = dict(once)
    for _ in range(repeats):
        for method, run in runs.items():
            start = time.perf_counter()
            run()
            best[method] = min(best.get(method, math.inf), time.perf_counter() - start)
    return {"case": case, "seed": seed, "candidates": candidates, "auto": plan.method,
            "times": {m: t * 1e9 for m, t in best.items()}}


def with_features(row: dict) -> dict:
    """``row`` with what each timed strategy does counted by the model in this tree (replanned from the case,
    so stored timings serve a model whose counts changed since)."""
    case = row["case"]
    kernel = case_kernel(case, row["seed"])
    shape = tuple(case["shape"]) + ((case["channels"],) if case["channels"] > 1 else ())
    work = make_plan(shape, kernel, x_dtype=case["dtype"], **geometry_of(case)).choice.work
    return {**row, "features": {m: costs.features(m, work) for m in row["times"]}}


def fit(rows: list[dict], old: dict) -> dict:
    """Nanoseconds per unit, per strategy: each unit refitted where the timings pin it down, else the whole
    strategy's units scaled by one factor.

    Per strategy, three candidates are weighed on the log error of its own
    timings: the table's units all scaled by the median ratio of measured to
    estimated time (robust with a handful of timings on a busy machine);
    every unit moved from that scaled table by least squares on the relative
    error, each move held back by a penalty on its size (a unit the timings
    barely see stays near its old cost); and, with at least three timings
    per unit, every unit fitted freely by non-negative least squares.  The
    one with the smaller mean log error is kept (a median let the small
    inputs, a strategy's worst-estimated cases, go unfitted).
    """
    from scipy.optimize import lsq_linear, nnls

    table = dict(old)
    for method in METHODS[1:]:
        data = [(r["features"][method], r["times"][method]) for r in rows if method in r["times"]]
        units = sorted({u for f, _ in data for u, v in f.items() if v and not u.startswith("import.")})
        if len(data) < 3 or not units:
            continue
        ratios = [t / max(_estimate(f, old), 1.0) for f, t in data]
        scale = math.exp(statistics.median(math.log(r) for r in ratios))
        prior = {u: old.get(u, 0.0) * scale for u in units}
        candidates = {"scaled": prior}
        moved = [u for u in units if prior[u] > 0]
        if moved:
            a = np.array([[f.get(u, 0.0) * prior[u] / t for u in moved] for f, t in data])
            b = 1.0 - np.array([_estimate(f, {**table, **prior}) / t for f, t in data])
            penalty = math.sqrt(RIDGE) * np.eye(len(moved))
            step = lsq_linear(np.vstack([a, penalty]), np.concatenate([b, np.zeros(len(moved))]),
                              bounds=(-0.95, 50.0)).x
            candidates["ridge"] = {**prior, **{u: prior[u] * (1.0 + float(d)) for u, d in zip(moved, step)}}
        if len(data) >= 3 * len(units):
            a = np.array([[f.get(u, 0.0) / t for u in units] for f, t in data])
            coefficients, _ = nnls(a, np.ones(len(data)), maxiter=50 * len(units))
            candidates["least squares"] = dict(zip(units, map(float, coefficients)))
        errors = {name: [abs(math.log(max(_estimate(f, {**table, **c}), 1.0) / t)) for f, t in data]
                  for name, c in candidates.items()}
        kept = min(errors, key=lambda name: statistics.fmean(errors[name]))
        table.update(candidates[kept])
        relative = [math.expm1(e) for e in errors[kept]]
        print(f"  {method:10} {len(data):4d} timings, {len(units):2d} units, {kept} (x{scale:.2f}): median error "
              f"{statistics.median(relative):.0%}, 90th percentile {np.percentile(relative, 90):.0%}")
    for method, runs_as in SAME_CODE.items():  # too few timings of its own: the units of the code it runs
        if sum(method in r["times"] for r in rows) < 3:
            table.update({u: v for u, v in ((f"{method}.{u.split('.', 1)[1]}", v) for u, v in table.items()
                                            if u.startswith(f"{runs_as}.")) if u in old})
    return table


# Strategies that run another's code (lowrank sums separable passes): a grid seldom makes them a candidate.
SAME_CODE = {"lowrank": "separable"}


RIDGE = 0.3  # the penalty on a unit's relative move, against the squared relative errors of the timings
SCALES = (0.8, 0.9, 1.0, 1.1, 1.25)


def tune(rows: list[dict], table: dict, rounds: int = 3) -> dict:
    """The fitted table with each strategy's units scaled (0.8x-1.25x) to make the picks' total log regret smallest.

    Each unit was fitted on its own strategy's timings, which says how
    close an estimate comes, not whether the ranking between strategies
    holds: a strategy estimated 10 % cheap loses every case it nearly
    wins.  One factor per strategy, tried in turn for a few rounds (ties
    keep the factor nearest 1).
    """
    table = dict(table)
    for _ in range(rounds):
        moved = False
        for method in METHODS[1:]:
            units = {u for r in rows for u in r["features"].get(method, {}) if not u.startswith("import.")}
            if not units:
                continue

            def loss(scale: float) -> float:
                trial = {**table, **{u: table.get(u, 0.0) * scale for u in units}}
                return sum(math.log(v) for v in regret(rows, trial))

            best = min(SCALES, key=lambda f: (round(loss(f), 6), abs(math.log(f))))
            if best != 1.0:
                table.update({u: table.get(u, 0.0) * best for u in units})
                moved = True
        if not moved:
            break
    return table


def _estimate(features: dict, table: dict) -> float:
    return sum(table.get(u, 0.0) * v for u, v in features.items())


def regret(rows: list[dict], table: dict) -> list[float]:
    """The measured time of the strategy the model picks over the fastest one's, per case."""
    out = []
    for r in rows:
        timed = [m for m in r["candidates"] if m in r["times"]]
        if not timed:
            continue
        pick = min(timed, key=lambda m: _estimate(r["features"][m], table))
        out.append(r["times"][pick] / min(r["times"][m] for m in timed))
    return out


def summary(name: str, values: list[float]) -> None:
    print(f"{name}: {len(values)} cases, median regret {statistics.median(values):.3f}, worst {max(values):.2f}, "
          f"over 1.2: {sum(v > 1.2 for v in values)}")


def import_costs() -> dict:
    """Nanoseconds a fresh interpreter spends importing OpenCV and scipy.fft (beyond numpy), medians of 5."""
    def seconds(code: str) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    base = seconds("import numpy")
    cv2 = max(0.0, seconds("import numpy, cv2") - base)
    scipy = max(0.0, seconds("import numpy, scipy.fft") - base)
    return {"import.cv2": cv2 * 1e9, "import.scipy_fft": scipy * 1e9}


def write_table(table: dict, note: str) -> None:
    lines = ['"""Nanoseconds per unit of work of every strategy (see :mod:`.costs`), fitted by '
             '``python bench/fit_costs.py``.', "", note, '"""', "", "NS = {"]
    for unit in sorted(table):
        lines.append(f"    {unit!r}: {table[unit]:.4g},")
    lines.append("}")
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", default="0/1", metavar="K/N",
                        help="time only the cases K, K+N, K+2N... of the grid (a long fit in several sittings)")
    parser.add_argument("--measurements", type=Path, nargs="+",
                        help="timings kept in the first FILE; with several FILEs (or one that exists) "
                             "read back and merged, nothing timed")
    parser.add_argument("--write", action="store_true", help="rewrite convcli/engine/cost_table.py")
    parser.add_argument("--keep-imports", action="store_true",
                        help="keep the table's import costs (timing whole interpreters on a busy machine is noise)")
    args = parser.parse_args()
    from convcli.engine.cost_table import NS as old

    part, parts = (int(n) for n in args.part.split("/"))
    kept = args.measurements or []
    if len(kept) > 1 or (kept and kept[0].exists()):
        rows = [row for path in kept for row in json.loads(path.read_text())]
    else:
        rows = []
        for i, case in enumerate(grid(args.cases, args.seed, False)):
            if i % parts != part:
                continue
            rows.append(measure(case, args.seed + i, args.repeats))
            t = rows[-1]["times"]
            print(f"{i:4d} {case['shape']} c{case['channels']} {case['dtype']} {case['kind']} k{case['taps']} "
                  f"s{case['stride']} d{case['dilation']}: " + ", ".join(
                      f"{m} {v / 1e6:.3g}" for m, v in sorted(t.items(), key=lambda kv: kv[1])), flush=True)
            if kept:
                kept[0].write_text(json.dumps(rows))
        if parts > 1:
            return  # the fit waits for every part: --measurements PART0 PART1 ...
    import cv2  # noqa: F401  the timings were taken with every library loaded (warmed): plan them so
    import scipy.fft  # noqa: F401

    rows = [with_features(r) for r in rows]
    print("fitting:")
    fitted = fit(rows, old)
    table = tune(rows, fitted)
    if not args.keep_imports:
        table.update(import_costs())
    summary("table in the tree", regret(rows, old))
    summary("fitted table     ", regret(rows, fitted))
    summary("fitted and tuned ", regret(rows, table))
    if args.write:
        import os

        imports = ("import costs kept from the table before" if args.keep_imports else
                   f"import costs timed at load {os.getloadavg()[0]:.1f}")
        note = (f"Fitted on {len(rows)} cases of the grid (seed {args.seed}, best of {args.repeats}, each timed with\n"
                f"the machine to itself) on a {os.cpu_count()}-core machine; {imports}.")
        write_table(table, note)
        print(f"wrote {TABLE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
