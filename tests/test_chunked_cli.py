"""``convcli filter`` on Zarr arrays and OME-Zarr images: chunk by chunk, as users run it.

The oracle is the in-memory run: the same volume as ``.npy`` through the
same command (or the engine's ``correlate`` of the whole array).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("dask.array")

from conftest import convcli, convcli_process, peak_memory  # noqa: E402

from convcli import correlate  # noqa: E402


def _plain(path, data, chunks, zarr_format=2, **kw):
    array = zarr.create_array(str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, zarr_format=zarr_format,
                              **kw)
    array[...] = data
    return str(path)


OME_AXES = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
            {"name": "z", "type": "space", "unit": "micrometer"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]


def _ome(path, data, chunks, scale=(1, 1, 2.0, 0.5, 0.5), levels=2):
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    datasets = [{"path": str(level), "coordinateTransformations": [
        {"type": "scale", "scale": [s * (2 ** level if i >= 2 else 1) for i, s in enumerate(scale)]}]}
        for level in range(levels)]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"name": "cells", "axes": OME_AXES, "datasets": datasets}],
                          "omero": {"channels": [{"label": "DAPI"}, {"label": "GFP"}]}}
    array = group.create_array("0", shape=data.shape, chunks=chunks, dtype=data.dtype,
                               dimension_names=["t", "c", "z", "y", "x"])
    array[...] = data
    for level in range(1, levels):
        group.create_array(str(level), shape=data.shape[:2] + tuple(n // 2 ** level for n in data.shape[2:]),
                           chunks=chunks, dtype=data.dtype)
    return str(path)


def test_a_zarr_volume_filters_as_the_same_volume_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((40, 50, 60)).astype(np.float32)
    source = _plain(tmp_path / "vol.zarr", volume, (7, 9, 11))
    np.save(tmp_path / "vol.npy", volume)
    # A budget this small cuts the volume into many chunks (and thin ones against the kernel's reach).
    run = convcli("filter", source, "-k", "gaussian:sigma=2", "--pad-mode", "symmetric", "--stride", "2,1,3",
                  "-o", str(tmp_path / "out.zarr"), "--memory-budget", "1M", "--json")
    assert run.exit_code == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["output_shape"] == [20, 50, 20]
    assert convcli("filter", str(tmp_path / "vol.npy"), "-k", "gaussian:sigma=2", "--pad-mode", "symmetric",
                   "--stride", "2,1,3", "-o", str(tmp_path / "out.npy")).exit_code == 0
    want = np.load(tmp_path / "out.npy")
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    got = out[...]
    assert got.dtype == want.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # The input's Zarr format and compressor; chunks scaled by the stride.
    assert out.metadata.zarr_format == 2
    assert out.compressors == zarr.open_array(source, mode="r").compressors
    assert len(os.listdir(tmp_path)) == 4  # vol.zarr, vol.npy, out.zarr, out.npy: no partial store left


def test_an_ome_zarr_image_keeps_its_metadata_with_the_scale_strided(tmp_path):
    rng = np.random.default_rng(1)
    data = (rng.random((2, 2, 12, 20, 18)) * 60000).astype(np.uint16)
    source = _ome(tmp_path / "cells.ome.zarr", data, (1, 1, 5, 8, 8))
    dest = tmp_path / "smooth.ome.zarr"
    run = convcli("filter", source, "-k", "gaussian:sigma=1um", "--stride", "1,2,2", "-o", str(dest))
    assert run.exit_code == 0, run.stderr
    assert "only level 0 of the input's 2 resolution levels" in run.stderr
    group = zarr.open_group(str(dest), mode="r")
    meta = group.attrs["ome"]
    scales = meta["multiscales"][0]
    assert scales["axes"] == OME_AXES and scales["name"] == "cells"
    assert meta["omero"] == {"channels": [{"label": "DAPI"}, {"label": "GFP"}]}
    assert scales["datasets"] == [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1, 1, 2.0, 1.0, 1.0]}]}]
    out = group["0"]
    assert out.shape == (2, 2, 12, 10, 9) and out.dtype == np.uint16
    assert out.metadata.zarr_format == 3 and out.metadata.dimension_names == ("t", "c", "z", "y", "x")
    # 1 um is 0.5 sample along z (2 um voxels) and 2 samples along y and x (0.5 um).
    from convcli.kernels import resolve

    weights = resolve("gaussian:sigma=0.5,2,2", ndim=3).weights[0]
    for t in range(2):
        for c in range(2):
            want = correlate(data[t, c], weights, stride=(1, 2, 2))
            want = np.clip(np.rint(want), 0, 65535).astype(np.uint16)
            assert np.abs(out[t, c].astype(int) - want).max() <= 1  # float32 rounding at a .5


def test_physical_units_follow_the_ome_scale(tmp_path):
    data = np.random.default_rng(2).random((1, 1, 8, 9, 10)).astype(np.float32)
    source = _ome(tmp_path / "a.zarr", data, (1, 1, 4, 4, 4), scale=(1, 1, 0.002, 0.0005, 0.0005), levels=1)
    group = zarr.open_group(source, mode="r+")
    attrs = group.attrs["ome"]
    for axis in attrs["multiscales"][0]["axes"][2:]:
        axis["unit"] = "millimeter"
    group.attrs["ome"] = attrs
    assert convcli("filter", source, "-k", "gaussian:sigma=1000nm", "-o", str(tmp_path / "nm.zarr")).exit_code == 0
    assert convcli("filter", source, "-k", "gaussian:sigma=0.5,2,2", "-o", str(tmp_path / "n.zarr")).exit_code == 0
    assert np.array_equal(zarr.open_group(str(tmp_path / "nm.zarr"))["0"][...],
                          zarr.open_group(str(tmp_path / "n.zarr"))["0"][...])


@pytest.mark.parametrize("kernel", ["median:3", "percentile:p=30,ball=1", "open:ball=2", "tophat:square=3",
                                    "gradient", "maxpool:3,stride=2,ceil=true", "avgpool:2,padding=1", "sobel"])
@pytest.mark.parametrize("budget", ["1M", "1G"])
def test_rank_morphology_pooling_and_magnitudes_run_chunked_as_in_memory(tmp_path, kernel, budget):
    # 1M: each task reads its own window (chunks thinner than the footprint's reach); 1G: stored chunks
    # shared in memory.  Either way the samples are the in-memory run's, and a pool's stride its own.
    rng = np.random.default_rng(4)
    volume = rng.standard_normal((20, 23, 19)).astype(np.float32)
    source = _plain(tmp_path / "v.zarr", volume, (6, 5, 7))
    np.save(tmp_path / "v.npy", volume)
    padding = ["--padding", "1"] if "padding" in kernel else []
    kernel = kernel.replace(",padding=1", "")
    for mode in ("reflect", "zeros"):
        run = convcli("filter", source, "-k", kernel, *padding, "--pad-mode", mode,
                      "-o", str(tmp_path / f"{mode}.zarr"), "--memory-budget", budget)
        assert run.exit_code == 0, run.stderr
        assert convcli("filter", str(tmp_path / "v.npy"), "-k", kernel, *padding, "--pad-mode", mode,
                       "-o", str(tmp_path / f"{mode}.npy")).exit_code == 0
        np.testing.assert_array_equal(zarr.open_array(str(tmp_path / f"{mode}.zarr"), mode="r")[...],
                                      np.load(tmp_path / f"{mode}.npy"))


@pytest.mark.parametrize("kernel, extra", [
    ("sobel", ["--range", "rescale"]),  # the whole result's min..max, found by a pass before the writes
    ("laplacian", ["--range", "rescale", "--depth", "8"]),
    ("gaussian:sigma=1", ["--depth", "8"]),
    ("laplacian", ["--range", "offset", "--depth", "24"]),
    ("box:3", ["--depth", "1"]),
    ("median:3", ["--depth", "32f"]),
])
@pytest.mark.parametrize("budget", ["1M", "1G"])
def test_depth_and_rescale_write_the_in_memory_samples(tmp_path, kernel, extra, budget):
    image = (np.random.default_rng(8).random((30, 41)) * 60000).astype(np.uint16)
    source = _plain(tmp_path / "v.zarr", image, (7, 9), zarr_format=3)
    np.save(tmp_path / "v.npy", image)
    run = convcli("filter", source, "-k", kernel, *extra, "-o", str(tmp_path / "o.zarr"), "--memory-budget", budget)
    assert run.exit_code == 0, run.stderr
    # In memory, a .npy output takes the depth asked (16 where none is: the Zarr keeps uint16).
    depth = [] if "--depth" in extra else ["--depth", "16"]
    assert convcli("filter", str(tmp_path / "v.npy"), "-k", kernel, *extra, *depth,
                   "-o", str(tmp_path / "o.npy")).exit_code == 0
    got, want = zarr.open_array(str(tmp_path / "o.zarr"), mode="r")[...], np.load(tmp_path / "o.npy")
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    if extra[:2] == ["--range", "rescale"]:
        assert got.min() == 0 and got.max() == np.iinfo(got.dtype).max


def test_rescale_refuses_nan_before_anything_is_written(tmp_path):
    image = np.random.default_rng(9).standard_normal((30, 41)).astype(np.float32)
    image[3, 4] = np.nan
    source = _plain(tmp_path / "n.zarr", image, (7, 9))
    run = convcli("filter", source, "-k", "box:3", "--depth", "8", "--range", "rescale", "-o", str(tmp_path / "o.zarr"))
    assert run.exit_code == 1
    assert run.stderr == f"convcli: error: {source}: 9 non-finite samples (NaN or infinity) in the result cannot be " \
                         "written as uint8 (a float output type keeps them)\n"
    assert sorted(os.listdir(tmp_path)) == ["n.zarr"]


def _ome_rgb(path, image, chunks):
    """A 2-D OME-Zarr image with its channels first (c, y, x), as microscopy and slide tools write them."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}]}
    array = group.create_array("0", shape=(image.shape[2],) + image.shape[:2], chunks=chunks, dtype=image.dtype,
                               dimension_names=["c", "y", "x"])
    array[...] = np.moveaxis(image, -1, 0)
    return str(path)


@pytest.mark.parametrize("colorspace, kernel, extra, budget", [
    ("linear", "gaussian:sigma=1.5", [], "1M"),
    ("linear", "open:disk=2", [], "1G"),
    ("luma", "sharpen", ["--stride", "2"], "1G"),  # the colour moved onto the strided grid, lazily
    ("luma", "median:3", [], "1M"),
])
def test_colorspace_converts_each_chunk_as_in_memory(tmp_path, colorspace, kernel, extra, budget):
    from PIL import Image

    image = (np.random.default_rng(10).random((37, 45, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "i.png")
    source = _ome_rgb(tmp_path / "i.ome.zarr", image, (1, 8, 9))  # one channel a chunk: a pixel's are read together
    run = convcli("filter", source, "-k", kernel, "--colorspace", colorspace, *extra, "-o", str(tmp_path / "o.zarr"),
                  "--memory-budget", budget)
    assert run.exit_code == 0, run.stderr
    assert convcli("filter", str(tmp_path / "i.png"), "-k", kernel, "--colorspace", colorspace, *extra,
                   "-o", str(tmp_path / "o.png")).exit_code == 0
    got = np.moveaxis(zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["0"][...], 0, -1)
    np.testing.assert_array_equal(got, np.asarray(Image.open(tmp_path / "o.png")))


def test_colorspace_on_a_volume_is_one_line(tmp_path):
    source = _plain(tmp_path / "v.zarr", np.ones((6, 7, 8), np.uint8), (3, 3, 3))
    run = convcli("filter", source, "-k", "box:3", "--colorspace", "linear", "-o", str(tmp_path / "o.zarr"))
    assert run.exit_code == 2
    assert run.stderr == "convcli: error: --colorspace: linear applies to images (RGB or grey), and this input " \
                         "is a volume\n"
    assert sorted(os.listdir(tmp_path)) == ["v.zarr"]


def test_a_zarr_store_is_one_input_not_a_batch_folder(tmp_path):
    source = _plain(tmp_path / "store", np.ones((6, 7), np.float32), (3, 3), zarr_format=3)  # no .zarr in its name
    run = convcli("filter", source, "-k", "box:3", "-o", str(tmp_path / "o.zarr"))
    assert run.exit_code == 0, run.stderr
    assert np.allclose(zarr.open_array(str(tmp_path / "o.zarr"))[...], 1.0)


@pytest.mark.parametrize("args, subject", [
    (["-o", "out.npy"], "--output"),
])
def test_what_a_chunked_run_cannot_do_is_one_line(tmp_path, args, subject):
    _plain(tmp_path / "vol.zarr", np.ones((6, 7, 8), np.uint8), (3, 3, 3))
    os.chdir(tmp_path)
    kernels = [] if "-k" in args else ["-k", "box:3"]
    run = convcli("filter", "vol.zarr", *kernels, *args)
    assert run.exit_code in (1, 2)
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"convcli: error: {subject}")
    assert not any(p.startswith("out") for p in os.listdir(tmp_path))


def test_memory_stays_within_the_budget_on_an_input_several_times_larger(tmp_path):
    volume = np.random.default_rng(3).standard_normal((96, 256, 256)).astype(np.float32)  # 24 MiB
    source = _plain(tmp_path / "big.zarr", volume, (16, 32, 32))
    del volume
    # A first small run loads Dask, zarr and the codecs: their modules would otherwise count as the run's memory
    # when this test runs first, and not when another chunked test ran before it.
    small = _plain(tmp_path / "small.zarr", np.ones((8, 8, 8), np.float32), (4, 4, 4))
    assert convcli("filter", small, "-k", "gaussian:sigma=1", "-o", str(tmp_path / "s.zarr")).exit_code == 0
    with peak_memory() as peak:
        run = convcli("filter", source, "-k", "gaussian:sigma=1", "-o", str(tmp_path / "o.zarr"),
                      "--memory-budget", "8M")
    assert run.exit_code == 0, run.stderr
    # The budget, and the task graph's own objects (a few hundred bytes a chunk).
    assert peak() < (8 << 20) + (4 << 20), peak()


def test_without_the_extra_a_chunked_input_names_it(tmp_path):
    _plain(tmp_path / "v.zarr", np.ones((4, 4), np.float32), (2, 2))
    blocker = tmp_path / "block"
    (blocker / "zarr").mkdir(parents=True)
    (blocker / "zarr" / "__init__.py").write_text("raise ImportError('zarr is not installed')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    done = convcli_process("filter", str(tmp_path / "v.zarr"), "-k", "box:3", "-o", str(tmp_path / "o.zarr"),
                           text=True, env=env)
    assert done.returncode == 2
    assert done.stderr == (f"convcli: error: {tmp_path / 'v.zarr'}: a Zarr input needs the 'scale' extra: "
                           "pip install 'convcli[scale]'\n")


def _chunk_files(root):
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name not in ("zarr.json", ".zarray", ".zattrs", ".zgroup"):
                path = os.path.join(folder, name)
                info = os.stat(path)
                found[os.path.relpath(path, root)] = (info.st_ino, info.st_mtime_ns)
    return found


def test_ctrl_c_keeps_a_partial_store_that_resume_completes(tmp_path):
    rng = np.random.default_rng(4)
    volume = rng.standard_normal((64, 64, 96)).astype(np.float32)
    source = _plain(tmp_path / "v.zarr", volume, (16, 16, 16), zarr_format=3)
    dest, partial = tmp_path / "o.zarr", tmp_path / "o.zarr.partial"
    args = ["filter", source, "-k", "box:9", "--method", "direct", "-o", str(dest), "--memory-budget", "1M"]
    process = __import__("subprocess").Popen([sys.executable, "-m", "convcli", *args],
                                             stderr=__import__("subprocess").PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_chunk_files(partial)) < 3:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode in (-signal.SIGINT, 130), stderr
    assert not dest.exists() and partial.is_dir()
    before = _chunk_files(partial)
    assert before
    again = convcli_process(*args)
    assert again.returncode == 1 and b"--resume" in again.stderr  # a partial store is never overwritten silently
    run = convcli(*args, "--resume")
    assert run.exit_code == 0, run.stderr
    assert not partial.exists()
    after = _chunk_files(dest)
    assert all(after[name] == info for name, info in before.items())  # kept, not rewritten
    want = correlate(volume, np.full((9, 9, 9), 1 / 729))
    assert np.abs(zarr.open_array(str(dest))[...] - want).max() <= 1e-5 * np.abs(want).max()
