"""What each strategy costs: the work its code does, counted from shapes and weights, times measured nanoseconds.

``auto`` (:func:`convcli.engine.strategies.choose_method`) takes the
strategy with the smallest :func:`estimate`.  Each estimate is a sum of
terms, each a count of something the strategy's code does for this input
(:func:`features`: multiply-adds over whole arrays, samples gathered or
copied, numpy and OpenCV calls, transform points times their log, a
library to import) times the nanoseconds one unit took on the benchmark
machine (:data:`convcli.engine.cost_table.NS`).  The counts follow the code
path by path: the bands and threads of the numpy strategies, OpenCV's own
border or a padded copy, its stride phases (each with a quarter of the
taps for stride 2) or a full-resolution pass kept every s-th row, its DFT
for large kernels, integer samples read as they are, float32 or float64.

The nanoseconds are fitted, not guessed: ``python bench/fit_costs.py``
times every strategy on a grid of inputs, refits each unit's cost from the
timings (least squares, or one scale per strategy when they are few), rewrites
:mod:`.cost_table` and prints the model's regret (the time of the method
it picks over the fastest one's) before and after.  A unit with no entry
costs nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .geometry import AxisPlan

# The unit that counts a library's import, by the module a strategy imports.
LIBRARIES = {"import.cv2": "cv2", "import.scipy_fft": "scipy.fft"}

# Above this many multiply-adds the numpy band strategies split their bands over the cores (bands.PARALLEL_WORK).
PARALLEL_WORK = 1 << 21
BAND_BYTES = 1 << 20  # bands.BAND_BYTES: padded input one band holds
# What each core past the first adds to the band strategies' speed (a second core: 1.8x, not 2x).  Below 1,
# a signal twice as long never looks cheaper than one under PARALLEL_WORK, though the cores start there.
THREAD_GAIN = 0.8


@dataclass(frozen=True)
class Work:
    """One correlation as the cost model sees it (shapes, weights summarised, types, what is loaded)."""

    lanes: int  # independent signals: batch x channels
    trail: int  # of which channels laid after the spatial axes (an RGB image's 3), filtered as one OpenCV image
    plans: tuple[AxisPlan, ...]
    taps: tuple[int, ...]
    nonzero: int  # taps non-zero in some channel's weights
    itemsize: int  # of the compute type: 4 (float32) or 8 (float64)
    x_dtype: str  # the samples' type: OpenCV reads some integer types as they are, others are converted first
    separable: bool  # every channel's weights are rank 1
    terms: int  # low-rank terms (0: not asked)
    constant: bool  # all weights equal (a box)
    shared: bool  # one kernel for every channel
    border_native: bool  # a border OpenCV pads itself (reflect, symmetric, replicate, zeros)
    threads: int  # cores the engine's threads use
    slices: tuple[int, ...] = ()  # a volume's kernel: non-zero taps of each z slice
    loaded: frozenset = frozenset(LIBRARIES.values())  # libraries imported already: their import costs nothing
    credit: tuple[tuple[str, float], ...] = ()  # (library, ns) paid off its import already: see import_cost

    def unloaded(self, library: str) -> float:
        """1 if ``library`` is still to import on this call, else 0 (the count of its ``import.*`` unit)."""
        return 0.0 if library in self.loaded else 1.0

    @property
    def integers(self) -> bool:
        return self.x_dtype[:1] in ("u", "i", "b")

    @property
    def outputs(self) -> int:
        return self.lanes * math.prod(p.out for p in self.plans)

    @property
    def padded(self) -> int:
        return self.lanes * math.prod(p.padded for p in self.plans)

    @property
    def samples(self) -> int:
        return self.lanes * math.prod(p.length for p in self.plans)

    @property
    def strided(self) -> bool:
        return any(p.stride > 1 for p in self.plans)


def estimate(method: str, work: Work, table=None) -> float:
    """Estimated nanoseconds of `method` on `work`: its :func:`features` times the table's costs.

    A library's import is charged less the credit `work` carries for it
    (:func:`import_cost`).
    """
    if table is None:
        from .cost_table import NS as table
    credit = dict(work.credit)
    total = 0.0
    for unit, count in features(method, work).items():
        ns = table.get(unit, 0.0)
        if unit in LIBRARIES:
            ns = max(0.0, ns - credit.get(LIBRARIES[unit], 0.0))
        total += ns * count
    return total


def import_cost(library: str, table=None) -> float:
    """Nanoseconds a process spends importing ``library`` (``cv2``, ``scipy.fft``), once.

    ``auto`` treats it as a ski rental: a call whose fastest method would
    import the library imports it when this call's saving, plus what earlier
    calls of the process gave up by not importing it (their *credit*), pays
    for the import.  A loop of calls too small to pay for it alone imports
    it once their savings add up to its cost, so a process never spends
    more than twice what the best choice in hindsight would have.
    """
    if table is None:
        from .cost_table import NS as table
    unit = next(u for u, name in LIBRARIES.items() if name == library)
    return table.get(unit, 0.0)


def features(method: str, work: Work) -> dict[str, float]:
    """What `method` does on `work`, counted: unit name -> count (see the module docstring)."""
    return _FEATURES[method](work)


# --------------------------------------------------------------------------- numpy bands
def _bands(work: Work) -> int:
    """Bands the numpy strategies cut the output into (bands.band_rows)."""
    p0 = work.plans[0]
    row_bytes = max(1, work.lanes * work.itemsize * math.prod(p.padded for p in work.plans[1:]))
    rows = max(1, (max(1, BAND_BYTES // row_bytes) - p0.span) // p0.stride + 1)
    rows = max(rows, -(-4 * (p0.span - 1) // p0.stride))
    return -(-p0.out // min(rows, p0.out))


def _threads(work: Work, per_output: float) -> float:
    """The speed-up of the band threads: the cores less what they lose sharing the memory bus and the bands."""
    if work.outputs * per_output < PARALLEL_WORK or work.threads < 2:
        return 1.0
    return 1.0 + (min(work.threads, _bands(work)) - 1) * THREAD_GAIN  # a band is one thread's


def _w(name: str, work: Work) -> str:
    return f"{name}{work.itemsize * 8}"


def _direct(work: Work) -> dict[str, float]:
    t = _threads(work, math.prod(work.taps))
    macs = work.outputs * work.nonzero / t
    # every weight, zero or not, is looked at in Python once a band (a huge kernel of zeros costs seconds)
    return {"direct.call": 1, "direct.tap": _bands(work) * work.nonzero / t,
            "direct.weight": _bands(work) * math.prod(work.taps), _w("direct.mac", work): macs,
            "direct.strided_mac": macs if work.strided else 0.0, "direct.loop": macs / _inner_run(work),
            _w("direct.gather", work): work.padded / t}


def _inner_run(work: Work) -> int:
    """Samples numpy's innermost loop takes at once in a tap's strided view (each loop costs its own start).

    With stride 1 along the last spatial axis a row and its channels are one
    run; with a stride there, a run is one sample's channels (an RGB image
    strided by 2: three samples a loop), or a row of a one-channel image.
    """
    last = work.plans[-1]
    if last.stride > 1 and work.trail > 1:
        return work.trail
    return last.out * (1 if last.stride > 1 else work.trail)


def separable_work(plans: tuple[AxisPlan, ...]) -> tuple[int, int]:
    """Multiply-adds of one separable pass per axis (the axis that shrinks most first), and samples written."""
    shape = [p.padded for p in plans]
    macs = written = 0
    for axis in sorted(range(len(plans)), key=lambda a: -plans[a].stride):
        shape[axis] = plans[axis].out
        size = math.prod(shape)
        macs += plans[axis].taps * size
        written += size
    return macs, written


def _separable_units(prefix: str, work: Work, times: int = 1) -> dict[str, float]:
    t = _threads(work, times * sum(work.taps))
    macs, written = separable_work(work.plans)
    return {f"{prefix}.call": 1, f"{prefix}.tap": times * _bands(work) * sum(work.taps) / t,
            _w(f"{prefix}.mac", work): times * work.lanes * macs / t,
            _w(f"{prefix}.pass", work): times * work.lanes * written / t,
            _w(f"{prefix}.gather", work): work.padded / t}


def _separable(work: Work) -> dict[str, float]:
    return _separable_units("separable", work)


def _lowrank(work: Work) -> dict[str, float]:
    return _separable_units("lowrank", work, max(1, work.terms))


def _box(work: Work) -> dict[str, float]:
    t = _threads(work, 8)
    return {"box.call": 1, "box.band": _bands(work) * len(work.plans) / t,
            "box.sum": work.padded * len(work.plans) / t, _w("box.out", work): work.outputs / t}


def _toeplitz(work: Work) -> dict[str, float]:
    from .toeplitz import row_outputs

    p = work.plans[0]
    b = row_outputs(p)
    width = (b - 1) * p.stride + p.span
    t = _threads(work, math.prod(work.taps))
    return {"toeplitz.call": 1, "toeplitz.matrix": work.lanes * work.taps[0],
            _w("toeplitz.mac", work): work.outputs * width / t, _w("toeplitz.gather", work): work.padded / t,
            "toeplitz.band": _bands(work) * work.lanes / t}


# --------------------------------------------------------------------------- transforms
def _fft(work: Work) -> dict[str, float]:
    if len(work.plans) == 1:
        from .spectral import GROUP_SAMPLES, MIN_BLOCKS, block_size, next_fast_length

        p = work.plans[0]
        size = block_size(p.span)
        if p.padded < MIN_BLOCKS * size:
            size = next_fast_length(p.padded)
        step = size - p.span + 1
        count = -(-((p.out - 1) * p.stride + 1) // step)
        points = work.lanes * count * size
        groups = work.lanes * -(-count // max(1, min(count, GROUP_SAMPLES // size)))
        return {"fft1.call": 1, "import.cv2": work.unloaded("cv2"), "fft1.block": work.lanes * count,
                "fft1.group": groups, _w("fft1.point", work): points * math.log2(max(size, 2)),
                _w("fft1.out", work): work.outputs}
    from .spectral import next_fast_length

    size = math.prod(next_fast_length(p.padded) for p in work.plans)  # the padded image (spectral.fft)
    return {"fft.call": 1, "import.scipy_fft": work.unloaded("scipy.fft"),
            _w("fft.point", work): work.lanes * size * math.log2(max(size, 2)),
            _w("fft.copy", work): work.padded + work.outputs}


# --------------------------------------------------------------------------- OpenCV
def _dft_taps(work: Work) -> int:
    """compiled.dft_taps: from this many taps OpenCV's filter2D runs a DFT (130 for float32, 50 for float64)."""
    return 130 if work.itemsize == 4 else 50


def _opencv(work: Work) -> dict[str, float]:
    if len(work.plans) == 3:
        return _planes(work)
    units = {"opencv.call": 1, "import.cv2": work.unloaded("cv2")}
    groups = (work.lanes // work.trail) * (1 if work.shared and work.trail <= 4 else work.trail)
    native = _native(work.plans, work)
    full = None
    if not native and _full_then_subsample(work):
        full = tuple(AxisPlan(p.length, p.taps, 1, 1, p.before, p.taps - 1 - p.before, p.length) for p in work.plans)
        native = _native(full, work)
    op = _operation(work)
    convert = work.integers and not _reads_integers(op, work)
    if convert:
        _add(units, _w("opencv.copy", work), work.samples)
    if full is not None and native:  # every row at full resolution, band by band, every s-th kept
        _add(units, "opencv.calls", groups * -(-work.plans[0].out // 64))
        _filter_units(units, op, work.samples, work.taps, work, integers=work.integers and not convert)
        _add(units, _w("opencv.copy", work), work.outputs)
        return units
    if native:
        _add(units, "opencv.calls", groups)
        _filter_units(units, op, work.outputs, work.taps, work, integers=work.integers and not convert,
                      banded_box=work.plans[0].length >= 256)
        return units
    _add(units, _w("opencv.copy", work), work.padded)  # the padded copy
    if not work.strided:  # dilation regrouped: one call over the padded image, in place
        _add(units, "opencv.calls", groups)
        _filter_units(units, op, work.padded, work.taps, work)
        _add(units, _w("opencv.copy", work), work.outputs)
        return units
    # Stride phases: per axis, the jobs of compiled._axis_jobs, each with its share of the taps.
    jobs, sub_taps, share, accumulate = 1, [], 1.0, 1
    for p, k in zip(work.plans, work.taps):
        if p.stride == 1 and p.dilation == 1:
            sub_taps.append(k)
        elif p.stride == 1:
            jobs *= min(p.dilation, p.out)
            share /= min(p.dilation, p.out)
            sub_taps.append(k)
        else:
            span = p.span if p.dilation > 1 else k
            n = min(p.stride, span)
            jobs *= n
            accumulate *= n
            sub_taps.append(-(-span // p.stride))
    sub = math.prod(sub_taps)
    sub_op = "box" if op == "box" else "separable" if op == "separable" else "dft" if sub >= _dft_taps(work) else "filter"
    _add(units, "opencv.calls", groups * jobs)
    _filter_units(units, sub_op, work.outputs * share * jobs, tuple(sub_taps), work)
    _add(units, _w("opencv.copy", work), 2 * work.outputs * (accumulate - 1))  # scratch, then added
    return units


def _filter_units(units: dict, op: str, computed: float, taps, work: Work, *, integers: bool = False,
                  banded_box: bool = False) -> None:
    kind = "int" if integers else str(work.itemsize * 8)
    if op == "box":
        _add(units, f"opencv.box{'_bands' if banded_box else ''}{kind}", computed)
    elif op == "separable":
        _add(units, f"opencv.sep{kind}", computed * sum(taps))
        _add(units, f"opencv.out{kind}", computed)
    elif op == "dft":  # over the image with OpenCV's own padding of the kernel's size
        points = computed * work.padded / max(work.samples, 1)
        _add(units, f"opencv.dft{kind}", points * math.log2(max(points / max(work.lanes, 1), 2)))
    else:
        _add(units, f"opencv.filter{kind}", computed * math.prod(taps))
        _add(units, f"opencv.out{kind}", computed)


def _planes(work: Work) -> dict[str, float]:
    """A volume plane by plane (compiled.correlate_3d): separable planes, or OpenCV calls per z slice."""
    units = {"planes.call": 1, "import.cv2": work.unloaded("cv2")}
    if work.x_dtype != f"float{work.itemsize * 8}":  # converted to the compute type first
        _add(units, _w("planes.convert", work), work.samples)
    planes = work.lanes * work.plans[0].out
    if work.separable:
        units["planes.calls"] = planes
        units[_w("planes.sepmac", work)] = work.outputs * sum(work.taps)
        units[_w("planes.out", work)] = work.outputs
        return units
    # Each non-zero z slice: one tap is a pass over the plane (an add or a shifted copy), more an OpenCV
    # call; every slice after the first adds into the output plane.
    # A slice of DFT size goes through filter2D's DFT: its points (the plane with its padding) times their log.
    live = [n for n in work.slices if n] or [work.nonzero]
    calls = [n for n in live if n > 1]
    dft = work.taps[1] * work.taps[2] >= _dft_taps(work)
    units["planes.calls"] = planes * len(live)
    units[_w("planes.out", work)] = work.outputs
    units[_w("planes.pass", work)] = work.outputs * (len(live) - 1)
    units[_w("planes.filter", work)] = work.outputs * len(calls)
    if dft:
        py, px = work.plans[1:]
        plane = py.padded * px.padded
        units[_w("planes.dft", work)] = planes * len(calls) * plane * math.log2(max(plane, 2))
    else:
        units[_w("planes.tap", work)] = work.outputs * sum(calls)
    return units


def _add(units: dict, unit: str, count: float) -> None:
    units[unit] = units.get(unit, 0.0) + count


def _native(plans, work: Work) -> bool:
    """compiled.native_geometry: OpenCV pads the image itself (stride and dilation 1, "same"-like padding)."""
    return work.border_native and all(p.stride == 1 and p.dilation == 1 and p.before + p.after == p.taps - 1
                                      and p.before <= p.length - 1 and p.after <= p.length - 1 for p in plans)


def _operation(work: Work) -> str:
    """compiled.operation, from the summary: box, separable (rank 1, both sides over 3), filter or dft."""
    if work.constant:
        return "box"
    if work.separable and min(work.taps) > 3:
        return "separable"
    span = math.prod(p.span if p.stride > 1 and p.dilation > 1 else p.taps for p in work.plans)
    return "dft" if span >= _dft_taps(work) else "filter"


def _reads_integers(op: str, work: Work) -> bool:
    """compiled.reads_integers: the integer types each OpenCV filter reads as they are."""
    from .compiled import INTEGER_FILTER_TAPS, INTEGER_SOURCES

    import numpy as np

    dtype = np.dtype(work.x_dtype)
    return (dtype.name in INTEGER_SOURCES.get(op, ()) and dtype.isnative
            and (op != "filter" or math.prod(work.taps) <= INTEGER_FILTER_TAPS))


def _full_then_subsample(work: Work) -> bool:
    from .compiled import full_then_subsample

    return full_then_subsample(work.plans, work.nonzero)


_FEATURES = {"direct": _direct, "separable": _separable, "lowrank": _lowrank, "box": _box, "toeplitz": _toeplitz,
             "fft": _fft, "opencv": _opencv}
