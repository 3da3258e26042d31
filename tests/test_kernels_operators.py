"""Rank, morphology and pooling specs: structuring elements, parameters, errors, and convcli.apply."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage as ndi

import convcli
from conftest import convcli as run_cli
from convcli.errors import KernelFileError, UsageError
from convcli.kernels import resolve


def footprint(spec: str, ndim: int = 2) -> np.ndarray:
    return resolve(spec, ndim=ndim).weights[0].astype(bool)


# --------------------------------------------------------------------------- structuring elements
@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5])
def test_disk_diamond_and_cross_are_their_definitions(radius):
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    np.testing.assert_array_equal(footprint(f"erode:disk={radius}"), x * x + y * y <= radius * radius)
    np.testing.assert_array_equal(footprint(f"erode:diamond={radius}"), np.abs(x) + np.abs(y) <= radius)
    np.testing.assert_array_equal(footprint(f"erode:cross={radius}"), (x == 0) | (y == 0))


def test_a_ball_is_a_sphere_of_voxels_and_disk_means_the_same_on_a_volume():
    z, y, x = np.mgrid[-2:3, -2:3, -2:3]
    ball = x * x + y * y + z * z <= 4
    np.testing.assert_array_equal(footprint("open:ball=2", 3), ball)
    np.testing.assert_array_equal(footprint("open:disk=2", 3), ball)
    np.testing.assert_array_equal(footprint("open:square=2", 3), np.ones((2, 2, 2), bool))


def test_radii_in_millimetres_make_an_ellipsoid_on_anisotropic_voxels():
    k = resolve("erode:ball=2mm", ndim=3, spacing=(2.0, 1.0, 1.0))
    assert k.shape == (3, 5, 5)
    z, y, x = np.mgrid[-1:2, -2:3, -2:3]
    np.testing.assert_array_equal(k.weights[0].astype(bool), (z / 1) ** 2 + (y / 2) ** 2 + (x / 2) ** 2 <= 1)


@pytest.mark.parametrize("angle, expected", [
    (0, [[1, 1, 1, 1, 1]]),
    (90, [[1], [1], [1], [1], [1]]),
    (45, [[0, 0, 1], [0, 1, 0], [1, 0, 0]]),
    (-45, [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
])
def test_a_line_runs_through_the_centre_at_its_angle(angle, expected):
    np.testing.assert_array_equal(footprint(f"dilate:line=5,angle={angle}"), np.array(expected, bool))


@pytest.mark.parametrize("angle", [10, 30, 60, 120, 163])
def test_a_line_is_symmetric_connected_and_about_its_length(angle):
    f = footprint(f"dilate:line=15,angle={angle}")
    np.testing.assert_array_equal(f, f[::-1, ::-1])
    assert 10 <= max(f.shape) <= 15 and f.sum() == max(f.shape)  # one tap per step of its longer axis


def test_size_and_square_take_one_value_per_axis():
    assert resolve("median:size=5,3", ndim=2).shape == (5, 3)
    assert resolve("erode:square=1,7", ndim=2).shape == (1, 7)
    assert resolve("median", ndim=3).shape == (3, 3, 3)  # 3 by default
    assert resolve("median:5ms", ndim=1, sample_rate=1000).shape == (5,)


@pytest.mark.parametrize("suffix, text", [(".txt", "0 1 0\n1 1 1\n0 1 0\n"), (".csv", "0,1,0\n1,1,1\n0,1,0\n")])
def test_a_footprint_file_in_any_kernel_format(tmp_path, suffix, text):
    path = tmp_path / f"plus{suffix}"
    path.write_text(text)
    np.testing.assert_array_equal(footprint(f"erode:footprint={path}"), ndi.generate_binary_structure(2, 1))
    np.save(tmp_path / "plus.npy", ndi.generate_binary_structure(2, 1))
    np.testing.assert_array_equal(footprint(f"close:footprint={tmp_path / 'plus.npy'}"),
                                  ndi.generate_binary_structure(2, 1))


@pytest.mark.parametrize("text, words", [("0 0.5\n1 1\n", "0.5 at index [0, 1]"), ("0 0\n0 0\n", "no 1")])
def test_a_footprint_file_that_is_not_a_mask_is_bad_data(tmp_path, text, words):
    path = tmp_path / "mask.txt"
    path.write_text(text)
    with pytest.raises(KernelFileError) as caught:
        resolve(f"erode:footprint={path}", ndim=2)
    assert words in caught.value.message and caught.value.subject == str(path)


# --------------------------------------------------------------------------- ranks and parameters
@pytest.mark.parametrize("p", [0, 10, 50, 90, 99.9, 100, -20])
def test_percentile_is_scipys_percentile_filter(p):
    x = np.random.default_rng(0).integers(0, 1000, (20, 24)).astype(np.int16)
    np.testing.assert_array_equal(convcli.apply(x, f"percentile:p={p},size=5", pad_mode="symmetric"),
                                  ndi.percentile_filter(x, p, size=5, mode="reflect"))


@pytest.mark.parametrize("r", [0, 3, 12, -1, -7])
def test_rank_is_scipys_rank_filter(r):
    x = np.random.default_rng(1).random((17, 23)).astype(np.float32)
    np.testing.assert_array_equal(convcli.apply(x, f"rank:r={r},size=5"),
                                  ndi.rank_filter(x, r, size=5, mode="mirror"))


@pytest.mark.parametrize("spec, words", [
    ("erode:disk=2,square=3", "one structuring element"),
    ("median:angle=30", "angle= goes with line=L"),
    ("rank:r=9,size=3", "from -9 to 8"),
    ("percentile:p=120", "-100 to 100"),
    ("median:disk=-1", "radius of 0 or more"),
    ("erode:square=0", "at least 1"),
    ("maxpool:2,stride=0", "at least 1"),
    ("avgpool:2,ceil=maybe", "true or false"),
    ("maxpool:2,count_pad=false", "no parameter 'count_pad'"),
    ("median:size=3,sigma=2", "no parameter 'sigma'"),
    ("median:size=100000,100000", "more than"),
])
def test_bad_parameters_are_usage_errors_naming_the_spec(spec, words):
    with pytest.raises(UsageError) as caught:
        resolve(spec, ndim=2)
    assert words in caught.value.message and caught.value.subject == spec


def test_a_line_is_for_images_only():
    with pytest.raises(UsageError, match="2D structuring element"):
        resolve("erode:line=5", ndim=3)


def test_normalize_leaves_an_operator_alone():
    k = resolve("median:3", ndim=2, normalize=True)
    assert k.operator is not None and k.weights[0].sum() == 9


# --------------------------------------------------------------------------- convcli.apply
def test_apply_runs_any_spec_with_the_engines_keywords():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    median = convcli.apply(image, "median:5", channel_axis=-1)
    assert median.dtype == np.uint8
    np.testing.assert_array_equal(median, ndi.median_filter(image, size=(5, 5, 1), mode="mirror"))
    pooled = convcli.apply(image, "maxpool:2", channel_axis=-1)
    np.testing.assert_array_equal(pooled, image.reshape(15, 2, 20, 2, 3).max(axis=(1, 3)))
    blurred = convcli.apply(image, "gaussian:sigma=1", channel_axis=-1)
    assert blurred.dtype == np.float32
    np.testing.assert_allclose(blurred, ndi.gaussian_filter(image.astype(np.float32), (1, 1, 0), mode="mirror"),
                               atol=1e-3)


def test_apply_takes_a_chain_with_the_stride_at_the_last_kernel():
    x = np.random.default_rng(3).random((32, 32)).astype(np.float32)
    chained = convcli.apply(x, ["median:3", "box:3"], stride=2)
    expected = convcli.correlate(convcli.apply(x, "median:3"), np.full((3, 3), 1 / 9), stride=2)
    np.testing.assert_allclose(chained, expected, rtol=1e-6)


def test_a_pool_takes_its_own_stride_and_refuses_another():
    with pytest.raises(UsageError) as caught:
        convcli.apply(np.zeros((8, 8)), "maxpool:2", stride=2)
    assert caught.value.subject == "stride" and "maxpool:2,stride=S" in caught.value.message
    assert convcli.apply(np.zeros((8, 8)), "maxpool:2,stride=1").shape == (7, 7)
    assert convcli.apply(np.zeros((9, 9)), "avgpool:2,ceil=true").shape == (5, 5)
    assert convcli.apply(np.zeros((9, 9)), "maxpool:3", padding=1).shape == (3, 3)


def test_apply_is_lazy_in_the_package_face():
    import subprocess
    import sys

    code = "import convcli, sys; assert 'numpy' not in sys.modules; print(callable(convcli.apply))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


# --------------------------------------------------------------------------- kernels list / show
def test_kernels_list_names_every_family_with_its_parameters():
    result = run_cli("kernels", "list", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for name in ("median", "min", "max", "percentile", "rank", "erode", "dilate", "open", "close", "tophat",
                 "blackhat", "gradient", "maxpool", "avgpool"):
        assert rows[name]["dimensions"] == [1, 2, 3], name
    assert rows["erode"]["parameters"]["disk"] == "R"
    assert rows["avgpool"]["parameters"]["count_pad"] is True
    assert "opening" in rows["open"]["aliases"]
    table = run_cli("kernels", "list").stdout
    assert "maxpool" in table and "square=3" in table


def test_kernels_show_draws_the_footprint_and_names_its_twin():
    result = run_cli("kernels", "show", "erode:diamond=2")
    assert result.exit_code == 0, result.output
    assert ". . # . .\n. # # # .\n# # # # #\n. # # # .\n. . # . ." in result.stdout
    assert "scipy.ndimage.grey_erosion" in result.stdout
    pool = run_cli("kernels", "show", "maxpool:3,stride=2,ceil=true", "--ndim", "1")
    assert "torch.nn.functional.max_pool1d(x, kernel_size=(3,), stride=(2,)" in pool.stdout
    assert "ceil_mode=True" in pool.stdout
    facts = json.loads(run_cli("kernels", "show", "median:3", "--json").stdout)
    assert facts["kind"] == "rank" and facts["order"] == 4 and facts["taps"] == 9
    assert facts["weights"] == [np.ones((3, 3)).tolist()]
