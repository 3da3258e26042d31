"""The named kernels match their definitions (scipy.ndimage, scipy.signal.firwin) in 1D, 2D and 3D.

Every comparison runs the kernel through ``Kernel.apply`` (the engine) with
the engine's ``symmetric`` border, which is scipy's ``reflect``.
"""
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from convcli.errors import UsageError
from convcli.kernels import files, generators, library, resolve

SHAPES = {1: (23,), 2: (9, 12), 3: (6, 7, 8)}
LIBRARY_FILES = sorted(library.builtin_entries().items())


def sample(ndim, seed=0):
    return np.random.default_rng(seed).normal(size=SHAPES[ndim])


def apply(spec, x, **kw):
    return resolve(spec, ndim=x.ndim, **kw).apply(x, pad_mode="symmetric")


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------- every library file is a test case


@pytest.mark.parametrize("name, entry", LIBRARY_FILES, ids=[n for n, _ in LIBRARY_FILES])
def test_library_entry_declares_and_keeps_its_promises(name, entry):
    defn = files.read_definition(entry, name=name)
    assert defn.description, "every library kernel has a one-line description"
    assert defn.sum is not None and defn.symmetry is not None, "declare sum and symmetry"
    assert defn.dimensions and None not in defn.variants, "library files are written in ## Nd sections"
    for ndim in defn.dimensions:
        k = resolve(name, ndim=ndim)
        assert k.ndim == ndim
        assert k.range_default == defn.range_default
        for w in k.weights:
            assert w.sum() == pytest.approx(defn.sum, abs=1e-12)
            flipped = np.flip(w)
            if defn.symmetry == "symmetric":
                np.testing.assert_array_equal(w, flipped)
            elif defn.symmetry == "antisymmetric":
                np.testing.assert_array_equal(w, -flipped)
            else:
                assert not np.array_equal(w, flipped) and not np.array_equal(w, -flipped)
        if len(k.weights) > 1:
            assert k.combine in ("magnitude", "max")
    for ndim in {1, 2, 3} - set(defn.dimensions):
        with pytest.raises(UsageError, match=f"{ndim}D"):
            resolve(name, ndim=ndim)


def test_library_names_do_not_shadow_families():
    names = set(library.builtin_entries())
    assert not names & (set(generators.FAMILIES) | set(generators.ALIASES))


def test_library_is_found_through_importlib_resources_or_the_checkout():
    folder = library.builtin_dir()
    assert (folder / "sobel-x.txt").is_file()
    assert Path(str(folder)).name in ("_library", "kernels")


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("letter, axis", [("x", -1), ("y", -2), ("z", -3)])
@pytest.mark.parametrize("base", ["sobel", "prewitt"])
def test_gradient_components_match_scipy(base, letter, axis, ndim):
    x = sample(ndim)
    if -axis > ndim:
        with pytest.raises(UsageError, match=f"{base}-{letter}"):
            resolve(f"{base}-{letter}", ndim=ndim)
        return
    close(apply(f"{base}-{letter}", x), getattr(ndi, base)(x, axis=axis, mode="reflect"))
    close(apply(f"{base}:{letter}", x), getattr(ndi, base)(x, axis=axis, mode="reflect"))


def scharr_reference(x, axis):
    # scipy has no scharr: the same construction as its sobel, smoothing [3, 10, 3]
    out = ndi.correlate1d(x, [-1.0, 0, 1], axis=axis, mode="reflect")
    for other in range(x.ndim):
        if other != axis % x.ndim:
            out = ndi.correlate1d(out, [3.0, 10, 3], axis=other, mode="reflect")
    return out


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_scharr_components_and_magnitude(ndim):
    x = sample(ndim)
    for letter, axis in zip("xyz", (-1, -2, -3)):
        if -axis <= ndim:
            close(apply(f"scharr-{letter}", x), scharr_reference(x, axis))
    magnitude = np.sqrt(sum(scharr_reference(x, axis) ** 2 for axis in range(ndim)))
    close(apply("scharr", x), magnitude)


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("base", ["sobel", "prewitt"])
def test_gradient_magnitude_matches_scipy(base, ndim):
    x = sample(ndim)
    close(apply(base, x), ndi.generic_gradient_magnitude(x, getattr(ndi, base), mode="reflect"))


def test_gradient_sign_is_positive_where_values_increase():
    ramp = np.add.outer(np.zeros(5), np.arange(6.0))  # increases along x
    assert (apply("sobel-x", ramp) >= 0).all() and apply("sobel-x", ramp)[2, 2] > 0
    assert np.allclose(apply("sobel-y", ramp), 0)


def test_roberts_is_the_diagonal_difference_magnitude():
    x = sample(2)
    got = resolve("roberts", ndim=2).apply(x, pad_mode="replicate")
    p = np.pad(x, ((0, 1), (0, 1)), mode="edge")  # 2x2: 'same' pads one sample after
    want = np.hypot(p[:-1, :-1] - p[1:, 1:], p[:-1, 1:] - p[1:, :-1])
    close(got, want)


def _rotations(mask):
    """The 8 compass rotations: each border value moves to the cell 45 degrees further round."""
    ring = sorted(((i, j) for i in range(3) for j in range(3) if (i, j) != (1, 1)),
                  key=lambda c: np.arctan2(1 - c[0], c[1] - 1))
    out = []
    for step in range(8):
        r = np.zeros((3, 3))
        r[1, 1] = mask[1, 1]
        for k, cell in enumerate(ring):
            r[ring[(k + step) % 8]] = mask[cell]
        out.append(r)
    return out


@pytest.mark.parametrize("name, first", [
    ("kirsch", [[5, 5, 5], [-3, 0, -3], [-3, -3, -3]]),
    ("compass", [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]),
])
def test_compass_kernels_are_the_max_over_eight_rotations(name, first):
    k = resolve(name, ndim=2)
    want_masks = _rotations(np.array(first, dtype=float))
    assert sorted(map(lambda w: w.tobytes(), k.weights)) == sorted(map(lambda w: w.tobytes(), want_masks))
    x = sample(2)
    close(k.apply(x, pad_mode="symmetric"),
          np.max([ndi.correlate(x, m, mode="reflect") for m in want_masks], axis=0))


# ---------------------------------------------------------------- Laplacians and sharpening


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_laplacian_matches_scipy(ndim):
    x = sample(ndim)
    close(apply("laplacian", x), ndi.laplace(x, mode="reflect"))


def test_laplacian_8_is_second_differences_along_four_directions():
    x = sample(2)
    p = np.pad(x, 1, mode="symmetric")
    c = p[1:-1, 1:-1]

    def second(di, dj):
        return p[1 + di:p.shape[0] - 1 + di, 1 + dj:p.shape[1] - 1 + dj] - 2 * c + \
            p[1 - di:p.shape[0] - 1 - di, 1 - dj:p.shape[1] - 1 - dj]

    close(apply("laplacian:8", x), second(0, 1) + second(1, 0) + second(1, 1) + second(1, -1))
    with pytest.raises(UsageError, match="2D"):
        resolve("laplacian:8", ndim=3)


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("amount", [1.0, 0.5])
def test_sharpen_is_identity_minus_amount_laplacian(ndim, amount):
    x = sample(ndim)
    close(apply(f"sharpen:{amount}", x), x - amount * ndi.laplace(x, mode="reflect"))


def test_sharpen_1_is_the_classic_stencil():
    w = resolve("sharpen", ndim=2).weights[0]
    np.testing.assert_array_equal(w, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    assert resolve("sharpen", ndim=3).weights[0][1, 1, 1] == 7


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_unsharp(ndim):
    x = sample(ndim)
    blurred = ndi.gaussian_filter(x, 1.5, mode="reflect")
    close(apply("unsharp:sigma=1.5,amount=0.7", x), x + 0.7 * (x - blurred))


# ---------------------------------------------------------------- smoothing


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("spec, sigma, truncate", [
    ("gaussian", 1.0, 4.0), ("gaussian:2", 2.0, 4.0), ("gaussian:sigma=0.8,truncate=2.5", 0.8, 2.5),
])
def test_gaussian_matches_scipy(spec, sigma, truncate, ndim):
    x = sample(ndim)
    close(apply(spec, x), ndi.gaussian_filter(x, sigma, truncate=truncate, mode="reflect"))


def test_gaussian_per_axis_sigma_including_zero():
    x = sample(3)
    close(apply("gaussian:sigma=2,0,0.5", x), ndi.gaussian_filter(x, (2, 0, 0.5), mode="reflect"))
    close(apply("gaussian:1.2,0.7", sample(2)), ndi.gaussian_filter(sample(2), (1.2, 0.7), mode="reflect"))


def test_gaussian_radius_parameter():
    x = sample(2)
    close(apply("gaussian:sigma=2,radius=3", x), ndi.gaussian_filter(x, 2, radius=3, mode="reflect"))


@settings(max_examples=25)
@given(sigma=st.floats(0.1, 4.0), truncate=st.floats(0.5, 5.0))
def test_gaussian_kernel_is_scipys_kernel(sigma, truncate):
    k = resolve(f"gaussian:sigma={sigma!r},truncate={truncate!r}", ndim=1).weights[0]
    r = k.size // 2
    assert r == int(truncate * sigma + 0.5)
    impulse = np.zeros(2 * r + 1)
    impulse[r] = 1
    np.testing.assert_allclose(k, ndi.gaussian_filter1d(impulse, sigma, truncate=truncate, mode="constant"),
                               rtol=1e-12, atol=1e-15)
    assert k.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("name", ["box", "blur", "mean"])
def test_box_matches_uniform_filter(name, size, ndim):
    x = sample(ndim)
    close(apply(f"{name}:{size}", x), ndi.uniform_filter(x, size, mode="reflect"))


def test_box_per_axis_size():
    x = sample(2)
    close(apply("box:size=3,5", x), ndi.uniform_filter(x, (3, 5), mode="reflect"))


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("radius", [1, 2])
def test_binomial(radius, ndim):
    x = sample(ndim)
    row = np.array([1.0, 2, 1]) / 4 if radius == 1 else np.array([1.0, 4, 6, 4, 1]) / 16
    want = x
    for axis in range(ndim):
        want = ndi.correlate1d(want, row, axis=axis, mode="reflect")
    close(apply(f"binomial:{radius}", x), want)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_log_matches_gaussian_laplace(ndim):
    x = sample(ndim)
    close(apply("log:sigma=1.3", x), ndi.gaussian_laplace(x, 1.3, mode="reflect"))


def test_log_per_axis_sigma():
    x = sample(3)
    close(apply("log:sigma=1,1.5,0.8", x), ndi.gaussian_laplace(x, (1, 1.5, 0.8), mode="reflect"))


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_dog(ndim):
    x = sample(ndim)
    want = ndi.gaussian_filter(x, 1.0, mode="reflect") - ndi.gaussian_filter(x, 2.0, mode="reflect")
    close(apply("dog:1,2", x), want)
    close(apply("dog:sigma1=1,sigma2=2", x), want)
    default = ndi.gaussian_filter(x, 1.0, mode="reflect") - ndi.gaussian_filter(x, 1.6, mode="reflect")
    close(apply("dog:1", x), default)


def test_signed_kernels_default_to_offset_and_smoothing_to_clip():
    for spec in ("sobel-x", "laplacian", "log", "dog", "emboss"):
        assert resolve(spec, ndim=2).range_default == "offset", spec
    for spec in ("gaussian", "box", "sobel", "kirsch", "sharpen", "motion"):
        assert resolve(spec, ndim=2).range_default == "clip", spec


# ---------------------------------------------------------------- motion, emboss


@pytest.mark.parametrize("length", [3, 5, 9])
def test_motion_along_the_axes_is_a_line_box(length):
    np.testing.assert_allclose(resolve(f"motion:{length}", ndim=2).weights[0][length // 2],
                               np.full(length, 1 / length), atol=1e-15)
    vertical = resolve(f"motion:length={length},angle=90", ndim=2).weights[0]
    np.testing.assert_allclose(vertical[:, length // 2], np.full(length, 1 / length), atol=1e-15)


def test_motion_45_degrees_runs_up_to_the_right():
    w = resolve("motion:length=5,angle=45", ndim=2).weights[0]
    assert w.sum() == pytest.approx(1)
    np.testing.assert_allclose(w, np.flip(w))  # centred line: point symmetric
    assert w[0, -1] > 0 and w[0, 0] == 0  # rows go down: up-right is row 0, last column


def test_emboss_leaves_flat_areas_at_zero():
    assert resolve("emboss", ndim=2).apply(np.full((5, 5), 7.0)).max() == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------- audio designs


@pytest.mark.parametrize("spec, args, kwargs", [
    ("lowpass:cutoff=2k", (101, 2000), {}),
    ("lowpass:2000", (101, 2000), {}),
    ("lowpass:cutoff=2khz,taps=31", (31, 2000), {}),
    ("lowpass:2kHz,window=hann", (101, 2000), {"window": "hann"}),
    ("lowpass:2k,taps=64,window=kaiser(8)", (64, 2000), {"window": ("kaiser", 8.0)}),
    ("highpass:cutoff=300hz,taps=51", (51, 300), {"pass_zero": False}),
    ("bandpass:low=300,high=3.4k", (101, [300, 3400]), {"pass_zero": False}),
])
def test_audio_designs_match_firwin(spec, args, kwargs):
    w = resolve(spec, ndim=1, sample_rate=16000).weights[0]
    np.testing.assert_allclose(w, signal.firwin(*args, fs=16000, **kwargs), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("spec, ndim, rate, message", [
    ("lowpass:2k", 1, None, "sample rate"),
    ("lowpass:2k", 2, 16000, "1D"),
    ("lowpass:9k", 1, 16000, "outside"),
    ("lowpass", 1, 16000, "needs cutoff"),
    ("highpass:1k,taps=64", 1, 16000, "odd number of taps"),
    ("bandpass:low=3k,high=300", 1, 16000, "below"),
    ("lowpass:2k,window=nosuchwindow", 1, 16000, "window"),
    ("lowpass:2 parsecs", 1, 16000, "frequency"),
])
def test_audio_design_errors(spec, ndim, rate, message):
    with pytest.raises(UsageError, match=message) as info:
        resolve(spec, ndim=ndim, sample_rate=rate)
    assert info.value.subject == spec


# ---------------------------------------------------------------- physical units


def test_sigma_in_milliseconds_uses_the_sample_rate():
    x = sample(1)
    close(apply("gaussian:sigma=5ms", x, sample_rate=400), ndi.gaussian_filter(x, 2.0, mode="reflect"))
    assert resolve("box:10ms", ndim=1, sample_rate=1000).weights[0].size == 10


def test_sigma_in_millimetres_on_anisotropic_voxels():
    x = sample(3)
    spacing = (3.0, 1.0, 0.5)
    got = apply("gaussian:sigma=1.5mm", x, spacing=spacing)
    close(got, ndi.gaussian_filter(x, (0.5, 1.5, 3.0), mode="reflect"))
    close(apply("log:sigma=1.5mm", x, spacing=spacing), ndi.gaussian_laplace(x, (0.5, 1.5, 3.0), mode="reflect"))
    # per-axis values with units, and plain numbers (samples) unaffected by spacing
    close(apply("gaussian:sigma=3mm,1mm,0.5mm", x, spacing=spacing), ndi.gaussian_filter(x, 1.0, mode="reflect"))
    close(apply("gaussian:1", x, spacing=spacing), ndi.gaussian_filter(x, 1.0, mode="reflect"))


@pytest.mark.parametrize("spec, kw, message", [
    ("gaussian:sigma=1.5mm", {}, "no voxel/pixel spacing"),
    ("gaussian:sigma=5ms", {}, "no sample rate"),
    ("gaussian:sigma=5furlongs", {}, "unknown unit"),
    ("gaussian:sigma=-1", {}, "zero or positive"),
    ("gaussian:sigma=1,2", {}, "one per axis"),
    ("gaussian:sigma=1,truncate=0", {}, "truncate"),
    ("gaussian:size=3", {}, "no parameter 'size'"),
    ("sobel-x:3", {}, "takes no parameters"),
    ("sobel:3", {}, "takes no parameters"),
    ("gaussian:", {}, "nothing after"),
    ("gaussian:sigma=1,,2", {}, "empty parameter"),
    ("dog:1,2,3,4", {}, "at most 3"),
])
def test_parameter_errors(spec, kw, message):
    with pytest.raises(UsageError, match=message) as info:
        resolve(spec, ndim=3, **kw)
    assert info.value.subject == spec


# ---------------------------------------------------------------- names out of place, unknown names


@pytest.mark.parametrize("spec, ndim", [
    ("kirsch", 3), ("compass", 1), ("roberts", 3), ("emboss", 1), ("motion", 3), ("motion", 1),
    ("lowpass:1k", 2), ("bandpass:low=1,high=2", 3), ("sobel-y", 1), ("sobel-z", 2),
])
def test_names_that_make_no_sense_for_the_dimension_are_refused(spec, ndim):
    with pytest.raises(UsageError, match=rf"{ndim}D") as info:
        resolve(spec, ndim=ndim, sample_rate=8000)
    assert info.value.subject == spec


@pytest.mark.parametrize("typo, suggestion", [("gausian", "gaussian"), ("sobelx", "sobel-x"),
                                              ("laplacain", "laplacian"), ("kirch", "kirsch")])
def test_unknown_name_suggests_the_closest(typo, suggestion):
    with pytest.raises(UsageError, match=f"did you mean .*{suggestion}") as info:
        resolve(typo, ndim=2)
    assert info.value.subject == typo


@pytest.mark.parametrize("spec, ndim", [("gaussian:sigma=100", 3), ("box:100000", 2), ("dog:1,300", 3),
                                        ("motion:100000", 2), ("binomial:5000", 3)])
def test_absurd_sizes_are_refused_before_allocating(spec, ndim):
    with pytest.raises(UsageError, match="the kernel would have shape") as info:
        resolve(spec, ndim=ndim)
    assert info.value.subject == spec


def test_huge_separable_gaussian_runs_one_axis_at_a_time():
    k = resolve("gaussian:sigma=100,0,0", ndim=3)
    assert k.weights[0].shape == (801, 1, 1)


def test_keyword_lists_end_at_the_next_key():
    k = resolve("gaussian:sigma=2,0,0.5,truncate=2", ndim=3)
    assert k.weights[0].shape == (9, 1, 3)


@pytest.mark.parametrize("method", ["direct", "opencv", "fft"])
def test_a_magnitude_leaves_the_input_alone_and_is_exact(method):
    """Responses are squared in place: never the caller's samples, even when a response could be them."""
    from convcli.kernels.kernel import Kernel

    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, 30)).astype(np.float32)
    before = x.copy()
    kernel = Kernel(spec="test", name="test", weights=(np.array([[1.0]]), np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])),
                    combine="magnitude")
    out = kernel.apply(x, method=method, pad_mode="zeros")
    assert np.array_equal(x, before)
    shifted = np.zeros_like(x)
    shifted[:, :-1] = 2 * x[:, 1:]
    np.testing.assert_allclose(out, np.sqrt(x.astype(np.float64) ** 2 + shifted.astype(np.float64) ** 2), rtol=2e-6,
                               atol=1e-5)
