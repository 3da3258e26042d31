"""auto's cost model: a library's import paid once per process, the issue's cases, properties it keeps.

No timing here: the estimates are pure functions of shapes, weights and the
table (bench/bench_regret.py measures how close they come to the clock).
"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convcli.engine import compiled, correlation, costs, make_plan, strategies
from convcli.engine.geometry import plan_axes
from convcli.errors import ParameterError

needs_opencv = pytest.mark.skipif(not compiled.available(), reason="OpenCV not installed")

GAUSSIAN = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2)
GAUSSIAN /= GAUSSIAN.sum()
GAUSSIAN_2D = np.outer(GAUSSIAN, GAUSSIAN)


def _small_saving():
    """A 256x256 uint8 plane and the 17x17 Gaussian: OpenCV saves less per call than its import costs."""
    plans = plan_axes((256, 256), (17, 17))
    return strategies.choose_method(1, GAUSSIAN_2D[None], plans, opencv=True, x_dtype="uint8")


@needs_opencv
def test_an_import_is_charged_less_the_savings_earlier_calls_gave_up():
    fresh = _small_saving()
    price = costs.import_cost("cv2")
    library, saving = fresh.forgone
    assert fresh.method != "opencv" and library == "cv2" and 0 < saving < price
    # the calls before paid all but this call's saving: now importing pays
    paid = strategies.choose_method(1, GAUSSIAN_2D[None], plan_axes((256, 256), (17, 17)), opencv=True,
                                    x_dtype="uint8", credit={"cv2": price - saving})
    assert paid.method == "opencv" and paid.forgone is None
    assert paid.costs == fresh.costs and "import paid" in paid.reason()  # shown at full price, whatever the credit
    short = strategies.choose_method(1, GAUSSIAN_2D[None], plan_axes((256, 256), (17, 17)), opencv=True,
                                     x_dtype="uint8", credit={"cv2": 0.9 * (price - saving)})
    assert short.method == fresh.method
    loaded = strategies.choose_method(1, GAUSSIAN_2D[None], plan_axes((256, 256), (17, 17)), opencv=True,
                                      x_dtype="uint8", imported=frozenset({"cv2"}))
    assert loaded.method == "opencv" and loaded.forgone is None
    assert loaded.costs["opencv"] == pytest.approx(fresh.costs["opencv"] - price)


@needs_opencv
def test_a_loop_of_small_calls_imports_opencv_once_their_savings_pay_for_it(monkeypatch):
    # The process as if OpenCV were not imported yet, with no plan and no savings remembered.
    monkeypatch.setattr(correlation, "_AS_LOADED", False)  # as the engine alone plans: no file filtered yet
    monkeypatch.setattr(correlation, "_imported", frozenset)
    monkeypatch.setattr(correlation, "_PLANS", {})
    monkeypatch.setattr(correlation, "_FORGONE", {})
    _, saving = _small_saving().forgone
    calls = math.ceil(costs.import_cost("cv2") / saving)  # the first call whose savings, summed, pay
    assert calls > 1
    methods = [make_plan((256, 256), GAUSSIAN_2D, x_dtype=np.uint8).method for _ in range(calls + 3)]
    assert methods.index("opencv") == calls - 1
    assert set(methods[calls - 1:]) == {"opencv"}


@needs_opencv
def test_a_python_loop_over_1080p_planes_in_a_fresh_process_runs_opencv_from_the_second_call_at_the_latest():
    code = (
        "import sys\nimport numpy as np\nfrom convcli import correlate\n"
        "from convcli.engine import make_plan\n"
        "assert 'cv2' not in sys.modules\n"
        "g = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2); k = np.outer(g, g) / g.sum() ** 2\n"
        "x = np.random.default_rng(0).integers(0, 256, (1080, 1920), dtype=np.uint8)\n"
        "loaded = []\n"
        "for _ in range(20):\n"
        "    y = correlate(x, k)\n"
        "    loaded.append('cv2' in sys.modules)\n"
        "print(loaded, make_plan(x.shape, k, x_dtype=x.dtype).method)\n"
        "ref = correlate(x, k, method='separable')\n"
        "assert np.abs(y - ref).max() < 1e-3\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, method = done.stdout.rsplit(" ", 1)
    assert all(eval(loaded)[1:]) and method.strip() == "opencv", done.stdout


@needs_opencv
@pytest.mark.parametrize("imported", [frozenset(), frozenset({"cv2", "scipy.fft"})])
def test_a_random_15x15_with_stride_2_on_1080p_rgb_goes_to_opencv_not_the_fft(imported):
    # issue 20: auto took the FFT (112 ms), OpenCV's strided path in bands of rows takes 37 ms
    kernel = np.random.default_rng(4).standard_normal((1, 15, 15))
    choice = strategies.choose_method(3, kernel, plan_axes((1080, 1920), (15, 15), stride=2), opencv=True,
                                      trail=3, imported=imported)
    assert choice.method == "opencv"
    plan = make_plan((1080, 1920, 3), kernel[0], stride=2, channel_axis=-1)
    assert plan.method == "opencv"


kernels = st.sampled_from(["random", "separable", "box", "sparse"])


def _kernel(kind: str, taps: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "box":
        return np.full(taps, 1.0 / math.prod(taps))
    if kind == "separable":
        out = rng.random(taps[0]) + 0.1
        for n in taps[1:]:
            out = np.multiply.outer(out, rng.random(n) + 0.1)
        return out
    kernel = rng.standard_normal(taps)
    if kind == "sparse":
        kernel[rng.random(taps) < 0.6] = 0.0
        kernel.flat[0] = 1.0
    return kernel


@st.composite
def workloads(draw):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.sampled_from([16, 40, 64, 300, 1000] if nd < 3 else [8, 16, 40])) for _ in range(nd))
    if nd == 1:
        shape = (shape[0] * draw(st.sampled_from([1, 64])),)
    taps = tuple(draw(st.integers(1, min(n, 9 if nd == 3 else 31))) for n in shape)
    kernel = _kernel(draw(kernels), taps, draw(st.integers(0, 99)))
    geometry = {"stride": draw(st.integers(1, 4)), "dilation": 1, "channel_axis": None}
    channels = draw(st.sampled_from([1, 1, 3, 4]))
    if channels > 1:
        shape += (channels,)
        geometry["channel_axis"] = -1
    dtype = draw(st.sampled_from(["uint8", "float32", "float64"]))
    return shape, kernel, geometry, dtype


@given(workloads())
def test_auto_never_picks_a_method_that_refuses_the_workload(workload):
    shape, kernel, geometry, dtype = workload
    plan = make_plan(shape, kernel, x_dtype=dtype, **geometry)
    assert plan.method in plan.choice.costs
    try:
        make_plan(shape, kernel, x_dtype=dtype, method=plan.method, **geometry)
    except ParameterError as refused:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"auto picked {plan.method}, which refuses it: {refused}")
    choice = strategies.choose_method(1, kernel[None], plan_axes(shape[:kernel.ndim], kernel.shape,
                                                                   stride=geometry["stride"]), opencv=False)
    assert choice.method != "opencv"  # not installed: never picked
    unsafe = strategies.choose_method(1, kernel[None], plan_axes(shape[:kernel.ndim], kernel.shape), finite=False,
                                      opencv=True)
    assert unsafe.method in ("direct", "separable", "opencv") and not unsafe.spreads_non_finite


def _everything_loaded() -> None:
    """Import what strategies import, so no estimate carries an import (whose credit changes call by call)."""
    import scipy.fft  # noqa: F401

    if compiled.available():
        compiled._cv2()


@given(workloads(), st.integers(0, 2))
def test_no_estimate_falls_when_the_input_grows(workload, axis):
    _everything_loaded()
    shape, kernel, geometry, dtype = workload
    axis = min(axis, kernel.ndim - 1)
    grown = list(shape)
    grown[axis] *= 2
    small = make_plan(shape, kernel, x_dtype=dtype, **geometry).choice
    large = make_plan(tuple(grown), kernel, x_dtype=dtype, **geometry).choice
    for method in small.costs.keys() & large.costs.keys():
        assert large.costs[method] >= 0.999 * small.costs[method], (method, shape, grown)
    # the pick's estimate too: more samples never look cheaper
    assert min(large.costs.values()) >= 0.999 * min(small.costs.values())


@needs_opencv
@pytest.mark.parametrize("dtype,shape,taps", [(np.float64, (300, 400), (9, 9)), (np.float64, (6, 40, 50), (3, 8, 8)),
                                              (np.float32, (6, 40, 50), (3, 12, 12))])
def test_a_nan_stays_in_its_footprint_where_opencv_would_take_its_dft(dtype, shape, taps):
    # filter2D takes a DFT from 50 taps in float64 (130 in float32), over a tile around the NaN:
    # such kernels are never sent to OpenCV with non-finite input, and auto's OpenCV keeps rows apart
    # only where no DFT runs
    x = np.random.default_rng(2).random(shape).astype(dtype)
    x[tuple(n // 2 for n in shape)] = np.nan
    kernel = np.random.default_rng(3).random(taps) + 0.1
    kernel[(0,) * len(taps)] = 0.0
    from convcli import correlate

    got = correlate(x, kernel, pad_mode="zeros")
    assert int(np.isnan(got).sum()) == np.count_nonzero(kernel)
    assert compiled.operation(kernel[None], plan_axes(shape[-2:], taps[-2:]), False, dtype) == (
        "dft" if taps[-1] * taps[-2] >= compiled.dft_taps(dtype) else "filter")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("size", [1000, correlation.PARALLEL_SCAN + 7])
def test_the_finiteness_scan_auto_pays_finds_every_nan_and_infinity(dtype, size):
    # one pass over the samples (their sum of squares), and a closer look where the squares overflow
    x = np.random.default_rng(6).random(size).astype(dtype)
    assert correlation._all_finite(x)
    big = np.full(size, np.finfo(dtype).max / 2, dtype=dtype)
    assert correlation._all_finite(big)  # its squares overflow, its samples are finite
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, size // 2, size - 1):
            for sample in (x, big):
                y = sample.copy()
                y[where] = bad
                assert not correlation._all_finite(y), (bad, where)
    strided = np.random.default_rng(7).random((size // 50, 100)).astype(dtype)[:, ::2]
    assert correlation._all_finite(strided)
    strided[3, 7] = np.nan
    assert not correlation._all_finite(strided)


@needs_opencv
def test_a_file_comes_out_the_same_whatever_the_process_filtered_before(monkeypatch, tmp_path):
    from PIL import Image

    from conftest import convcli, convcli_process

    rng = np.random.default_rng(11)
    Image.fromarray((rng.random((300, 400, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    alone = tmp_path / "alone.png"
    assert convcli_process("filter", tmp_path / "in.png", "-k", "gaussian:sigma=2", "-o", alone).returncode == 0
    # This process as a batch worker's would be after many small calls that did without OpenCV (not imported yet).
    monkeypatch.setattr(correlation, "_AS_LOADED", False)
    monkeypatch.setattr(correlation, "_imported",
                        lambda: frozenset(("cv2", "scipy.fft")) if correlation._AS_LOADED else frozenset())
    monkeypatch.setattr(correlation, "_PLANS", {})
    monkeypatch.setattr(correlation, "_FORGONE", {})
    _, saving = _small_saving().forgone
    for _ in range(math.ceil(costs.import_cost("cv2") / saving) - 1):
        make_plan((256, 256), GAUSSIAN_2D, x_dtype=np.uint8)
    later = tmp_path / "later.png"
    assert convcli("filter", tmp_path / "in.png", "-k", "gaussian:sigma=2", "-o", later).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(later)), np.asarray(Image.open(alone)))
