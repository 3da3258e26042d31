"""The fast strategies (bands on threads, low rank, running sums, Toeplitz products, blocked FFT,
OpenCV) held to the literal loop definition and to each other."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from convcli import correlate
from convcli.engine import bands, compiled, make_plan, spectral, strategies
from convcli.engine.borders import parse_pad_mode
from convcli.engine.geometry import plan_axes
from oracle import axis_geometry, correlate_loops

MODES = [("zeros", "zeros", 0.0), ("constant:-1.5", "constant", -1.5), ("reflect", "reflect", 0.0),
         ("symmetric", "symmetric", 0.0), ("replicate", "replicate", 0.0), ("circular", "circular", 0.0)]
GEOMETRIES = [((1, 1), (1, 1), "same"), ((2, 2), (1, 1), "same"), ((1, 1), (2, 2), "same"),
              ((2, 3), (2, 1), "full"), ((3, 1), (1, 2), (1, 4))]
needs_opencv = pytest.mark.skipif(not compiled.available(), reason="OpenCV not installed")


@pytest.fixture
def small_bands(monkeypatch):
    """Bands of a few rows and threads even for tiny work, so every band and thread path runs."""
    monkeypatch.setattr(bands, "BAND_BYTES", 256)
    monkeypatch.setattr(bands, "PARALLEL_WORK", 0)


def _kernels(rng, shape):
    box = np.full(shape, 0.25)
    u = [rng.normal(size=k) for k in shape]
    rank1 = u[0]
    for v in u[1:]:
        rank1 = np.multiply.outer(rank1, v)
    w = [rng.normal(size=k) for k in shape]
    second = w[0]
    for v in w[1:]:
        second = np.multiply.outer(second, v)
    return {"general": rng.normal(size=shape), "box": box, "rank1": rank1, "rank2": rank1 + second}


def _methods(nd, name):
    methods = ["direct", "fft", "lowrank"]
    if name in ("box", "rank1"):
        methods.append("separable")
    if name == "box":
        methods.append("box")
    if nd == 1:
        methods.append("toeplitz")
    if nd <= 2 and compiled.available():
        methods.append("opencv")
    return methods


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m[0])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_every_method_matches_the_loop_definition_in_bands_and_threads(nd, mode, geometry, small_bands):
    spec, oracle_mode, cval = mode
    stride, dilation, pad = (tuple(g[a % 2] for a in range(nd)) if isinstance(g, tuple) else g for g in geometry)
    shape = {1: (23,), 2: (9, 8), 3: (7, 5, 6)}[nd]
    kshape = {1: (4,), 2: (3, 4), 3: (2, 3, 2)}[nd]
    rng = np.random.default_rng(nd * 100 + MODES.index(mode) * 10 + GEOMETRIES.index(geometry))
    x = rng.normal(size=shape)
    lengths = [axis_geometry(shape[a], kshape[a], stride[a], dilation[a], pad if isinstance(pad, str) else pad[a])[1]
               for a in range(nd)]
    if min(lengths) < 1:
        return
    border, value = parse_pad_mode(spec)
    volume_planes = nd == 3 and compiled.available() and compiled.planes_native(
        border, value, plan_axes(shape, kshape, stride=stride, dilation=dilation, padding=pad))
    for name, kernel in _kernels(rng, kshape).items():
        expected = correlate_loops(x, kernel, stride, dilation, pad, oracle_mode, cval)
        for method in _methods(nd, name) + (["opencv"] if volume_planes else []):
            got = correlate(x, kernel, stride=stride, dilation=dilation, padding=pad, pad_mode=spec, method=method)
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, err_msg=f"{name} {method}")


@pytest.mark.parametrize("layout", ["last", "first", "middle", "batch"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["shared", "depthwise"])
def test_channels_stay_in_place_and_every_method_agrees_with_direct(layout, per_channel, small_bands):
    rng = np.random.default_rng(7)
    x = {"last": rng.normal(size=(10, 9, 3)), "first": rng.normal(size=(3, 10, 9)),
         "middle": rng.normal(size=(10, 3, 9)), "batch": rng.normal(size=(2, 3, 10, 9))}[layout]
    axis = {"last": -1, "first": 0, "middle": 1, "batch": 1}[layout]
    base = np.full((3, 3), 1 / 9)
    kernel = np.stack([base * (c + 1) for c in range(3)]) if per_channel else base
    opts = dict(channel_axis=axis, stride=(2, 1), pad_mode="symmetric", spatial_ndim=2)
    expected = correlate(x, kernel, method="direct", **opts)
    assert expected.flags.c_contiguous
    moved = np.moveaxis(x, axis, -1)
    for c in range(3):
        ref = correlate_loops(moved[..., c] if moved.ndim == 3 else moved[0, ..., c],
                              kernel[c] if per_channel else kernel, (2, 1), (1, 1), "same", "symmetric")
        got_c = np.moveaxis(expected, axis, -1)[..., c]
        np.testing.assert_allclose(got_c if got_c.ndim == 2 else got_c[0], ref, rtol=1e-12, atol=1e-12)
    methods = ["separable", "lowrank", "box", "fft"] + (["opencv"] if compiled.available() else [])
    for method in methods:
        got = correlate(x, kernel, method=method, **opts)
        assert got.shape == expected.shape and got.flags.c_contiguous, method
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=method)


def test_banded_direct_equals_the_loop_definition_on_a_larger_image(small_bands):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 33)).astype(np.float32)
    kernel = rng.normal(size=(5, 4)).astype(np.float32)
    reference = correlate_loops(x, kernel, (2, 1), (1, 2), "same", "reflect")
    got = correlate(x, kernel, stride=(2, 1), dilation=(1, 2), method="direct")
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)


def test_float32_paths_agree_with_float64_direct_to_float32_tolerance():
    rng = np.random.default_rng(11)
    image = rng.random((70, 90, 3), dtype=np.float32)
    cases = [(np.full((9, 9), 1 / 81), "box"), (np.outer(np.hanning(7), np.hanning(9)), "separable"),
             (rng.normal(size=(5, 5)), "fft"), (np.add.outer(np.arange(7.0), np.arange(7.0)) ** 2, "lowrank")]
    for kernel, method in cases:
        for m in [method] + (["opencv"] if compiled.available() else []):
            got = correlate(image, kernel, channel_axis=-1, method=m)
            assert got.dtype == np.float32
            expected = correlate(image.astype(np.float64), kernel, channel_axis=-1, method="direct")
            np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5 * np.abs(kernel).sum(), err_msg=m)
    audio = rng.standard_normal((5000, 2), dtype=np.float32)
    fir = np.hanning(101) / np.hanning(101).sum()
    got = correlate(audio, fir, channel_axis=-1, method="toeplitz", stride=3, pad_mode="circular")
    expected = correlate(audio.astype(np.float64), fir, channel_axis=-1, method="direct", stride=3, pad_mode="circular")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_overlap_save_blocks_equal_one_transform(monkeypatch):
    rng = np.random.default_rng(5)
    audio = rng.standard_normal((3000, 2))
    response = rng.normal(size=301) * np.exp(-np.arange(301) / 60)
    expected = correlate(audio, response, channel_axis=-1, method="direct", pad_mode="symmetric")
    monkeypatch.setattr(spectral, "MIN_BLOCKS", 10 ** 9)
    whole = correlate(audio, response, channel_axis=-1, method="fft", pad_mode="symmetric")
    monkeypatch.setattr(spectral, "MIN_BLOCKS", 1)
    blocked = correlate(audio, response, channel_axis=-1, method="fft", pad_mode="symmetric")
    np.testing.assert_allclose(whole, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(blocked, expected, rtol=1e-9, atol=1e-9)


def test_lowrank_terms_rebuild_the_kernel_and_count_the_rank():
    rng = np.random.default_rng(2)
    for shape in [(5, 7), (3, 4, 5)]:
        kernel = rng.normal(size=shape)
        terms = strategies.lowrank_terms(kernel)
        rebuilt = sum(np.einsum(*itertools.chain(*[(f, [i]) for i, f in enumerate(t)]), list(range(len(shape))))
                      for t in terms)
        np.testing.assert_allclose(rebuilt, kernel, atol=1e-12)
    disk = (np.add.outer(np.arange(-4, 5) ** 2, np.arange(-4, 5) ** 2) <= 16).astype(float)
    assert len(strategies.lowrank_terms(disk)) < 9
    assert strategies.lowrank_terms(np.zeros((3, 3))) == []


def test_the_cost_model_is_pure_and_picks_the_strategy_built_for_each_workload():
    def pick(shape, kernel, channels=1, **geometry):
        plans = plan_axes(shape, kernel.shape, **geometry)
        return strategies.choose_method(channels, kernel[None], plans, opencv=False).method

    g = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2)
    assert pick((2160, 3840), np.full((31, 31), 1 / 961), 3) == "box"
    assert pick((2160, 3840), np.outer(g, g), 3) == "separable"
    assert pick((180 * 44100,), np.hanning(101), 2) == "toeplitz"
    assert pick((180 * 44100,), np.ones(88200) + np.arange(88200), 2) == "fft"
    assert pick((256, 256, 256), np.random.default_rng(0).random((7, 7, 7))) == "fft"
    assert pick((64, 64), np.array([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])) == "direct"
    disk = (np.add.outer(np.arange(-7, 8) ** 2, np.arange(-7, 8) ** 2) <= 49).astype(float)
    assert pick((1000, 1000), disk + 0.5 * (disk > 0)) in ("lowrank", "fft")
    plans = plan_axes((2160, 3840), (7, 7))
    kernel = np.random.default_rng(1).random((1, 7, 7))
    first = strategies.choose_method(3, kernel, plans, opencv=True)
    assert first == strategies.choose_method(3, kernel, plans, opencv=True)
    assert first.method == "opencv"
    # small one-shot work never loads OpenCV; non-finite input never goes to a spreading method:
    # OpenCV's filter2D skips zero weights like direct (local), its box filter and DFT do not
    assert strategies.choose_method(1, kernel, plan_axes((256, 256), (7, 7)), opencv=True).method != "opencv"
    choice = strategies.choose_method(3, kernel, plans, opencv=True, finite=False)
    assert choice.method == "opencv" and not choice.spreads_non_finite
    box = np.full((1, 31, 31), 1 / 961)
    assert strategies.choose_method(3, box, plan_axes((2160, 3840), (31, 31)), opencv=True).spreads_non_finite
    assert strategies.choose_method(3, box, plan_axes((2160, 3840), (31, 31)), opencv=True,
                                    finite=False).method in ("direct", "separable")


def test_auto_keeps_a_nan_local_whatever_it_would_have_picked():
    x = np.zeros((600, 800), dtype=np.float32)
    x[100, 200] = np.nan
    x[300, 300] = np.inf
    kernels = [np.full((31, 31), 1 / 961), np.random.default_rng(0).random((15, 15))]
    kernels.append(np.random.default_rng(1).random((7, 7)) * (np.arange(7) != 3))  # a zero column
    for kernel in kernels:
        assert make_plan(x.shape, kernel).choice.spreads_non_finite or kernel.shape == (7, 7)
        got = correlate(x, kernel, pad_mode="zeros")
        expected = correlate(x, kernel, pad_mode="zeros", method="direct")
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
        assert (~np.isfinite(got)).sum() == 2 * np.count_nonzero(kernel)


@pytest.mark.parametrize("method,kernel,message", [
    ("box", np.eye(3), "not a box"), ("toeplitz", np.ones((3, 3)), "1-D kernels"),
])
def test_a_forced_method_that_cannot_compute_the_kernel_is_refused(method, kernel, message):
    with pytest.raises(ValueError, match=message):
        correlate(np.ones((8, 8)), kernel, method=method)


@needs_opencv
def test_opencv_runs_volumes_plane_by_plane_only_where_it_pads_the_planes_itself():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(9, 8, 7))
    with pytest.raises(ValueError, match="plane by plane"):
        correlate(x, np.ones((2, 2, 2)), method="opencv", pad_mode="circular")
    lap = np.zeros((3, 3, 3))
    lap[1, 1, :] = lap[1, :, 1] = lap[:, 1, 1] = 1.0
    lap[1, 1, 1] = -6.0
    g = np.exp(-np.linspace(-2, 2, 5) ** 2)
    for kernel in (lap, rng.normal(size=(3, 3, 2)), np.multiply.outer(np.outer(g, g), g)):  # the last separable
        for mode in ("reflect", "symmetric", "replicate", "zeros"):
            for stride, dilation in (((1, 1, 1), (1, 1, 1)), ((2, 1, 1), (2, 1, 1))):
                got = correlate(x, kernel, pad_mode=mode, stride=stride, dilation=dilation, method="opencv")
                expected = correlate(x, kernel, pad_mode=mode, stride=stride, dilation=dilation, method="direct")
                np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, err_msg=f"{mode} {stride}")


@needs_opencv
def test_opencv_covers_every_border_natively_or_by_padding():
    x = np.random.default_rng(4).normal(size=(6, 5)).astype(np.float32)
    for spec, oracle_mode, cval in MODES:
        mode, value = parse_pad_mode(spec)
        plans = plan_axes(x.shape, (3, 3))
        assert (compiled.native_border(mode, value, plans) is None) == (spec in ("circular", "constant:-1.5"))
        for padding in ("same", 7):  # 7: wider than the image, always padded by the engine
            got = correlate(x, np.arange(9.0).reshape(3, 3), padding=padding, pad_mode=spec, method="opencv")
            expected = correlate_loops(x, np.arange(9.0).reshape(3, 3), (1, 1), (1, 1), padding, oracle_mode, cval)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4, err_msg=f"{spec} {padding}")


@needs_opencv
def test_the_3d_gaussian_on_256_cubed_peaks_under_three_volumes_of_memory():
    import subprocess
    import sys

    # The data's share of the peak: the input volume, plus what the call adds on top of
    # the resident set it started with (output and scratch).  The interpreter, numpy
    # and OpenCV themselves take 50-75 MB depending on the installation, which says
    # nothing about the engine.  VmHWM of the child, not ru_maxrss: Linux carries the
    # parent's peak into ru_maxrss across exec.
    code = (
        "import cv2\nimport numpy as np\nfrom convcli import correlate\n"
        "status = lambda key: [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)][0]\n"
        "v = np.random.default_rng(0).random((256, 256, 256), dtype=np.float32)\n"
        "g = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2); g /= g.sum()\n"
        "before = status('VmRSS')\n"
        "out = correlate(v, np.multiply.outer(np.outer(g, g), g))\n"
        "assert out.shape == v.shape and abs(float(out.mean()) - float(v.mean())) < 1e-3\n"
        "print(1 + (status('VmHWM') - before) * 1024 / v.nbytes)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 2.0 <= float(done.stdout) < 3.0, done.stdout  # at least input + output, under 3 volumes


@needs_opencv
def test_convcli_filter_of_a_256_cubed_volume_peaks_under_three_volumes_whole_process(tmp_path):
    import subprocess
    import sys

    # The user's command, interpreter, numpy and OpenCV included: the samples read
    # straight into their array and filtered in it (overwrite_x), so the process holds
    # about one volume besides what its libraries take.  (The command closes stdout.)
    src, dst = tmp_path / "vol.npy", tmp_path / "out.npy"
    np.save(src, np.random.default_rng(0).random((256, 256, 256), dtype=np.float32))
    code = (
        "import sys\nfrom convcli.cli import main\n"
        f"sys.argv = ['convcli', 'filter', {str(src)!r}, '-k', 'gaussian:sigma=2', '-o', {str(dst)!r}]\n"
        "try:\n    main()\nexcept SystemExit as done:\n    assert not done.code, done.code\n"
        "hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "sys.stderr.write(str(hwm * 1024 / 256 ** 3 / 4))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(done.stderr) < 3.0, done.stderr
    out, x = np.load(dst), np.load(src)
    assert out.shape == x.shape and abs(float(out.mean()) - float(x.mean())) < 1e-3


@needs_opencv
@pytest.mark.parametrize("mode", ["reflect", "symmetric", "replicate", "zeros"])
def test_opencv_box_filter_in_bands_of_rows_agrees_with_direct(mode, monkeypatch):
    monkeypatch.setattr(compiled, "BOX_BAND_ROWS", 8)
    x = np.random.default_rng(12).random((61, 40, 3))
    kernel = np.full((9, 6), 0.1)
    got = correlate(x, kernel, channel_axis=-1, pad_mode=mode, method="opencv")
    expected = correlate(x, kernel, channel_axis=-1, pad_mode=mode, method="direct")
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("spec", ["reflect", "symmetric", "replicate", "circular", "zeros", "constant:4"])
def test_band_gathering_pads_exactly_as_numpy_pad_even_far_wider_than_the_signal(spec):
    mode, value = parse_pad_mode(spec)
    extra = {"constant_values": value} if mode.numpy_mode == "constant" else {}
    for n in range(1, 6):
        for before, after in ((0, 0), (1, 3), (7, 12)):
            index = bands.source_index(np.arange(-before, n + after), n, mode)
            sample = np.arange(10.0, 10.0 + n)
            rebuilt = np.where(index >= 0, sample[np.maximum(index, 0)], value)
            np.testing.assert_array_equal(rebuilt, np.pad(sample, (before, after), mode=mode.numpy_mode, **extra))
    x = np.random.default_rng(1).normal(size=(2, 5, 3, 4, 2))
    plans = plan_axes((5, 3, 4), (9, 8, 3), padding="full")
    total = plans[0].before + plans[0].length + plans[0].after
    expected = np.pad(x, [(0, 0)] + [(p.before, p.after) for p in plans] + [(0, 0)], mode=mode.numpy_mode, **extra)
    for lo, hi in ((0, total), (3, 9), (total - 2, total)):
        np.testing.assert_array_equal(bands.gather_band(x, lo, hi, plans, mode, value, np.float64), expected[:, lo:hi])


@needs_opencv
@pytest.mark.parametrize("mode", ["reflect", "symmetric", "replicate", "zeros"])
@pytest.mark.parametrize("stride", [2, (3, 1), (2, 3)])
@pytest.mark.parametrize("kind", ["random", "separable", "box"])
def test_strided_opencv_in_bands_of_rows_is_the_one_call_result(mode, stride, kind, monkeypatch):
    rng = np.random.default_rng(31)
    x = rng.random((53, 47, 3)).astype(np.float32)
    g = np.exp(-0.5 * (np.arange(-3, 4) / 1.2) ** 2)
    kernel = {"random": rng.random((7, 5)), "separable": np.outer(g, g[1:-1]), "box": np.full((5, 5), 0.04)}[kind]
    opts = dict(channel_axis=-1, stride=stride, pad_mode=mode, method="opencv")
    monkeypatch.setattr(compiled, "SUBSAMPLE_BAND_BYTES", 1 << 40)  # one band: the whole image at once
    whole = correlate(x, kernel, **opts)
    monkeypatch.setattr(compiled, "SUBSAMPLE_BAND_BYTES", 1)  # one output row per band, on both threads
    banded = correlate(x, kernel, **opts)
    np.testing.assert_array_equal(banded, whole)
    expected = correlate(x.astype(np.float64), kernel, channel_axis=-1, stride=stride, pad_mode=mode,
                         method="direct")
    np.testing.assert_allclose(banded, expected, rtol=0, atol=1e-5)


def test_auto_weighs_the_opencv_path_that_skips_the_rows_a_stride_drops():
    loaded = frozenset({"cv2", "scipy.fft"})
    kernel = np.random.default_rng(4).standard_normal((1, 15, 15))
    strided = strategies.choose_method(3, kernel, plan_axes((1080, 1920), (15, 15), stride=2), opencv=True,
                                       trail=3, imported=loaded)
    whole = strategies.choose_method(3, kernel, plan_axes((1080, 1920), (15, 15)), opencv=True, trail=3,
                                     imported=loaded)
    assert strided.method == "opencv"  # not the FFT, which computes every row and then drops three in four
    assert strided.costs["opencv"] < 0.5 * whole.costs["opencv"]
    # the FFT transforms the whole padded image either way (only its copy of the output shrinks)
    from convcli.engine.costs import features

    assert features("fft", strided.work)["fft.point32"] >= 0.99 * features("fft", whole.work)["fft.point32"]


def test_a_library_costs_its_import_only_until_it_is_loaded():
    kernel = np.random.default_rng(5).standard_normal((1, 7, 7))
    plans = plan_axes((256, 256), (7, 7))
    fresh = strategies.choose_method(1, kernel, plans, opencv=True)
    loaded = strategies.choose_method(1, kernel, plans, opencv=True, imported=frozenset({"cv2", "scipy.fft"}))
    assert fresh.method == "direct" and loaded.method == "opencv"
    assert fresh.costs["opencv"] - loaded.costs["opencv"] > 1e7  # OpenCV's import: tens of milliseconds
    assert fresh.costs["direct"] == loaded.costs["direct"]
