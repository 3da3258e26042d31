"""`convcli filter` with rank, morphology and pooling kernels, on images, audio and volumes, as users run it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage as ndi
import soundfile as sf
from PIL import Image

from conftest import convcli, leftovers


def run(*args):
    return convcli("filter", *map(str, args))


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png", dpi=(300, 300))
    return tmp_path / "photo.png", rgb


def test_median_of_a_photo_is_scipys_per_channel_and_keeps_every_sample(tmp_path, photo):
    path, rgb = photo
    result = run(path, "-k", "median:5", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "out.png"))
    np.testing.assert_array_equal(out, ndi.median_filter(rgb, size=(5, 5, 1), mode="mirror"))


def test_salt_and_pepper_goes_and_a_sixteen_bit_scan_stays_sixteen_bit(tmp_path):
    rng = np.random.default_rng(1)
    clean = np.tile(np.linspace(1000, 60000, 40, dtype=np.uint16), (30, 1))
    noisy = clean.copy()
    spots = rng.random(clean.shape) < 0.05
    noisy[spots] = rng.choice([0, 65535], spots.sum())
    Image.fromarray(noisy).save(tmp_path / "scan.png")
    assert run(tmp_path / "scan.png", "-k", "median:3", "-o", tmp_path / "clean.png").exit_code == 0
    out = Image.open(tmp_path / "clean.png")
    assert out.mode in ("I;16", "I")
    got = np.asarray(out).astype(np.int64)
    np.testing.assert_array_equal(got, ndi.median_filter(noisy, 3, mode="mirror"))
    assert np.abs(got - clean)[2:-2, 2:-2].max() < 3000  # no spot left: a spot is 60000 away


@pytest.mark.parametrize("spec, operation", [("erode:disk=1", ndi.grey_erosion), ("open:square=3", ndi.grey_opening),
                                             ("dilate:cross=1", ndi.grey_dilation)])
def test_a_binary_image_stays_binary(tmp_path, spec, operation):
    rng = np.random.default_rng(2)
    mask = ndi.binary_dilation(rng.random((40, 50)) < 0.04, iterations=2)
    Image.fromarray(mask).convert("1").save(tmp_path / "mask.png")
    result = run(tmp_path / "mask.png", "-k", spec, "--pad-mode", "replicate", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.output
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "1"
    structure = ndi.generate_binary_structure(2, 1) if "=1" in spec else np.ones((3, 3), bool)
    expected = operation(mask.astype(np.uint8), footprint=structure, mode="nearest")
    np.testing.assert_array_equal(np.asarray(out), expected.astype(bool))


def test_a_median_declicks_audio_and_keeps_rate_and_subtype(tmp_path):
    rate = 8000
    t = np.arange(rate) / rate
    tone = np.round(8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    stereo = np.stack([tone, tone // 2], axis=1)
    clicked = stereo.copy()
    clicked[[1000, 3000, 5000], 0] = 32000
    sf.write(tmp_path / "clicks.wav", clicked, rate, subtype="PCM_16")
    result = run(tmp_path / "clicks.wav", "-k", "median:5", "-o", tmp_path / "clean.wav")
    assert result.exit_code == 0, result.output
    out, out_rate = sf.read(tmp_path / "clean.wav", dtype="int16")
    assert out_rate == rate and sf.info(tmp_path / "clean.wav").subtype == "PCM_16"
    np.testing.assert_array_equal(out, ndi.median_filter(clicked, size=(5, 1), mode="mirror"))
    assert np.abs(out[[1000, 3000, 5000], 0]).max() < 9000  # the clicks are gone


def test_a_pool_divides_the_sample_rate_and_the_resolution(tmp_path, photo):
    path, rgb = photo
    assert run(path, "-k", "maxpool:2", "-o", tmp_path / "small.png").exit_code == 0
    small = Image.open(tmp_path / "small.png")
    np.testing.assert_array_equal(np.asarray(small), rgb.reshape(24, 2, 32, 2, 3).max(axis=(1, 3)))
    assert round(small.info["dpi"][0]) == 150
    sf.write(tmp_path / "a.wav", np.zeros((1000, 1), np.float32), 8000, subtype="FLOAT")
    assert run(tmp_path / "a.wav", "-k", "avgpool:4", "-o", tmp_path / "b.wav").exit_code == 0
    assert sf.info(tmp_path / "b.wav").samplerate == 2000 and sf.info(tmp_path / "b.wav").frames == 250


def test_a_volume_opened_with_a_ball_is_scipys(tmp_path):
    vol = np.random.default_rng(3).random((12, 14, 10)).astype(np.float32)
    np.save(tmp_path / "vol.npy", vol)
    result = run(tmp_path / "vol.npy", "-k", "open:ball=1", "-o", tmp_path / "out.npy")
    assert result.exit_code == 0, result.output
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ndi.grey_opening(vol, footprint=ndi.generate_binary_structure(3, 1),
                                                        mode="mirror"))


def test_rank_kernels_chain_with_linear_ones(tmp_path, photo):
    path, rgb = photo
    import convcli

    result = run(path, "-k", "median:3", "-k", "sharpen", "-k", "maxpool:2", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.output
    expected = convcli.apply(rgb, ["median:3", "sharpen", "maxpool:2"], channel_axis=-1)
    out = np.asarray(Image.open(tmp_path / "out.png")).astype(int)
    np.testing.assert_array_equal(out, np.clip(np.rint(expected), 0, 255))


def test_a_footprint_file_drives_the_morphology(tmp_path, photo):
    path, rgb = photo
    (tmp_path / "plus.txt").write_text("0 1 0\n1 1 1\n0 1 0\n")
    result = run(path, "-k", f"erode:footprint={tmp_path / 'plus.txt'}", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.output
    plus = ndi.generate_binary_structure(2, 1)[..., None]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")),
                                  ndi.grey_erosion(rgb, footprint=plus, mode="mirror"))


@pytest.mark.parametrize("args, code, words", [
    (["-k", "maxpool:2", "--stride", "2"], 2, "--stride: applies to the last kernel, and a pool takes its own"),
    (["-k", "maxpool:2", "--padding", "full"], 2, "a pool pads as PyTorch does"),
    (["-k", "maxpool:3", "--padding", "2"], 2, "more than half the pooling window"),
    (["-k", "avgpool:2", "--dilation", "2"], 2, "PyTorch's avg_pool has no dilation"),
    (["-k", "erode:disk=2,square=3"], 2, "give one structuring element, not square and disk"),
    (["-k", "median:9", "--padding", "valid", "--method", "opencv", "--dilation", "9"], 2, "gives no output"),
    (["-k", "rank:r=1,size=3", "--method", "opencv"], 2, "opencv computes the median"),
])
def test_bad_combinations_are_one_line_and_write_nothing(tmp_path, photo, args, code, words):
    path, _ = photo
    result = run(path, *args, "-o", tmp_path / "out.png")
    assert result.exit_code == code, result.output
    assert words in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out.png").exists() and not leftovers(tmp_path)


def test_a_bad_footprint_file_is_failed_work(tmp_path, photo):
    path, _ = photo
    (tmp_path / "mask.txt").write_text("0 2 0\n")
    result = run(path, "-k", f"dilate:footprint={tmp_path / 'mask.txt'}", "-o", tmp_path / "out.png")
    assert result.exit_code == 1 and "holds 2 at index [0, 1]" in result.stderr
    assert result.stderr.startswith(f"convcli: error: {tmp_path / 'mask.txt'}: ")


def test_explain_says_which_algorithm_runs(tmp_path, photo):
    path, _ = photo
    result = run(path, "-k", "median:5", "-k", "maxpool:2,ceil=true", "--explain", "--json")
    assert result.exit_code == 0, result.output
    median, pool = json.loads(result.stdout)
    assert median["methods"] == ["opencv"] and "medianBlur" in median["why"]
    assert median["output_shape"] == [48, 64, 3] and median["kernel"]["kind"] == "rank"
    assert pool["output_shape"] == [24, 32, 3] and pool["stride"] == [2, 2] and "PyTorch" in pool["why"]
    text = run(tmp_path / "photo.png", "-k", "open:disk=2", "--explain").stdout
    assert "operator: open by a flat structuring element of 13 taps" in text
    np.save(tmp_path / "vol.npy", np.zeros((8, 8, 8), np.float32))
    vol = json.loads(run(tmp_path / "vol.npy", "-k", "median:3", "--explain", "--json").stdout)[0]
    assert vol["methods"] == ["direct"] and "selection network" in vol["why"]


@pytest.mark.parametrize("alpha", ["premultiply", "keep", "channel"])
def test_transparent_images_take_rank_kernels_in_every_alpha_mode(tmp_path, alpha):
    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[4:16, 5:19] = (200, 40, 10, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    for spec in ("dilate:disk=1", "maxpool:2", "median:3"):
        result = run(tmp_path / "logo.png", "-k", spec, "--alpha", alpha, "-o", tmp_path / "out.png")
        assert result.exit_code == 0, result.output
        out = np.asarray(Image.open(tmp_path / "out.png"))
        assert out.shape[-1] == 4
        if alpha == "keep" and spec != "maxpool:2":
            np.testing.assert_array_equal(out[..., 3], rgba[..., 3])


def test_nan_in_a_float_volume_spreads_over_its_window_only(tmp_path):
    vol = np.ones((9, 9, 9), np.float32)
    vol[4, 4, 4] = np.nan
    np.save(tmp_path / "nan.npy", vol)
    assert run(tmp_path / "nan.npy", "-k", "median:3", "-o", tmp_path / "out.npy").exit_code == 0
    out = np.load(tmp_path / "out.npy")
    assert np.isnan(out[3:6, 3:6, 3:6]).all() and np.isnan(out).sum() == 27


def test_an_input_over_the_memory_budget_is_not_streamed_through_a_rank_kernel(tmp_path):
    np.save(tmp_path / "big.npy", np.zeros((64, 64, 64), np.float32))
    result = run(tmp_path / "big.npy", "-k", "median:3", "--memory-budget", "256K", "-o", tmp_path / "out.npy")
    assert result.exit_code == 1
    assert "only weighted kernels are filtered in streamed bands, not median:3" in result.stderr
    assert not (tmp_path / "out.npy").exists() and not leftovers(tmp_path)
