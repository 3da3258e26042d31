"""Regenerate the pooling test fixtures: PyTorch's max_pool*d / avg_pool*d on small random inputs.

DEVELOPMENT ONLY: needs torch, which is never a dependency of convcli (the
tests read the stored results)::

    /work/peers/bin/python bench/make_pool_fixtures.py        # any python with torch 2.x

It writes ``tests/fixtures/pooling/torch_pooling.npz`` (about 150 KB):

- ``lengths_max`` and ``lengths_avg``: for every 1-D geometry in a grid
  (input length, window, stride, padding, dilation, ceil_mode), the output
  length PyTorch gives, or -1 where it refuses the geometry;
- ``case{i}_x`` / ``case{i}_y`` and ``cases`` (a JSON list of keyword
  arguments): random (N, C, *spatial) float32 inputs in 1, 2 and 3
  dimensions, some holding NaN and infinities, and PyTorch's result, over
  random windows, strides, paddings, dilations, ceil_mode and
  count_include_pad.  Computed in float64 (inputs rounded to float32 first)
  so the stored results are the exact means and maxima.
"""
from __future__ import annotations

import itertools
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "pooling", "torch_pooling.npz")
MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
GRID = dict(n=range(1, 11), k=range(1, 6), s=range(1, 5), p=range(0, 4), d=range(1, 4), ceil=(False, True))


def lengths(kind: str) -> np.ndarray:
    """Rows (n, k, s, p, d, ceil, output length or -1) over the grid; avg has dilation 1 only."""
    rows = []
    for n, k, s, p, d, ceil in itertools.product(*GRID.values()):
        if kind == "avg" and d != 1:
            continue
        x = torch.zeros(1, 1, n, dtype=torch.float64)
        try:
            if kind == "max":
                out = F.max_pool1d(x, k, stride=s, padding=p, dilation=d, ceil_mode=ceil).shape[-1]
            else:
                out = F.avg_pool1d(x, k, stride=s, padding=p, ceil_mode=ceil).shape[-1]
        except RuntimeError:
            out = -1
        rows.append((n, k, s, p, d, int(ceil), out))
    return np.array(rows, dtype=np.int16)


def random_case(rng: np.random.Generator) -> tuple[dict, np.ndarray] | None:
    nd = int(rng.integers(1, 4))
    kind = "max" if rng.random() < 0.55 else "avg"
    top = {1: 12, 2: 9, 3: 6}[nd]
    spatial = [int(v) for v in rng.integers(1, top + 1, nd)]
    window = [int(v) for v in rng.integers(1, 5, nd)]
    stride = [int(v) for v in rng.integers(1, 5, nd)] if rng.random() < 0.6 else None
    padding = [int(rng.integers(0, w // 2 + 1)) for w in window]
    dilation = [int(v) for v in rng.integers(1, 4, nd)] if kind == "max" and rng.random() < 0.4 else [1] * nd
    args = dict(kind=kind, nd=nd, window=window, stride=stride, padding=padding, dilation=dilation,
                ceil_mode=bool(rng.random() < 0.5), count_include_pad=bool(rng.random() < 0.5))
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *spatial)
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "max" and rng.random() < 0.3:
        flat = x.reshape(-1)
        flat[rng.integers(0, flat.size, 2)] = [np.nan, -np.inf][int(rng.integers(0, 2))]
    return args, x


def torch_pool(args: dict, x: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(x.astype(np.float64))
    common = dict(stride=args["stride"], padding=args["padding"], ceil_mode=args["ceil_mode"])
    if args["kind"] == "max":
        return MAX[args["nd"]](t, args["window"], dilation=args["dilation"], **common).numpy()
    return AVG[args["nd"]](t, args["window"], count_include_pad=args["count_include_pad"], **common).numpy()


def main() -> None:
    rng = np.random.default_rng(20240517)
    arrays = {"lengths_max": lengths("max"), "lengths_avg": lengths("avg")}
    cases = []
    while len(cases) < 240:
        args, x = random_case(rng)
        try:
            y = torch_pool(args, x)
        except RuntimeError:
            continue  # a geometry PyTorch refuses: the length grid covers those
        arrays[f"case{len(cases)}_x"] = x
        arrays[f"case{len(cases)}_y"] = y
        cases.append(args)
    arrays["cases"] = np.array(json.dumps(cases))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"{OUT}: {len(cases)} cases, torch {torch.__version__}")


if __name__ == "__main__":
    main()
