"""``convcli filter`` on tiled and striped TIFFs over the memory budget: read tile by tile, written as tiled BigTIFF.

The oracle is the in-memory run of the same file and command with a budget
that holds it; the chunked run must give the same samples and the layout,
tags and resolution the in-memory writer keeps.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")
pytest.importorskip("dask.array")

from conftest import convcli, leftovers, peak_memory  # noqa: E402

SMALL = "128K"  # forces chunks on the test images below (each needs about 1 MiB in memory)
BIG = "1G"


def _image(kind: str, rng):
    if kind == "rgb8":
        return (rng.random((150, 170, 3)) * 255).astype(np.uint8)
    if kind == "grey16":
        smooth = np.add.outer(np.linspace(0, 30000, 150), np.linspace(0, 20000, 170))
        return (smooth + rng.random((150, 170)) * 15000).astype(np.uint16)
    return rng.standard_normal((150, 170)).astype(np.float32)


def _write(path, data, layout: str, **kw):
    segments = {"tile": (32, 48)} if layout == "tiled" else {"rowsperstrip": 8}
    tifffile.imwrite(str(path), data, compression="zlib", resolution=(300, 300), resolutionunit="INCH",
                     software="convcli tests", metadata=None, **segments, **kw)
    return str(path)


def _filter(source, dest, budget, *args):
    run = convcli("filter", str(source), *args, "-o", str(dest), "--memory-budget", budget, "--json")
    assert run.exit_code == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.parametrize("kind", ["rgb8", "grey16", "float32"])
@pytest.mark.parametrize("layout", ["tiled", "striped"])
# The method is named where results are not integers: two methods may round a tie to different integers.
@pytest.mark.parametrize("args", [["-k", "gaussian:sigma=2", "--method", "separable"], ["-k", "sobel"],
                                  ["-k", "gaussian:sigma=1", "--stride", "2", "--method", "direct"]])
def test_a_tiff_over_the_budget_filters_as_it_does_in_memory(tmp_path, kind, layout, args):
    data = _image(kind, np.random.default_rng(0))
    source = _write(tmp_path / "in.tif", data, layout)
    memory = _filter(source, tmp_path / "memory.tif", BIG, *args)
    chunks = _filter(source, tmp_path / "chunks.tif", SMALL, *args)
    assert chunks["clipped"] == memory["clipped"]  # a Sobel of uint8 clips many
    want, got = tifffile.imread(tmp_path / "memory.tif"), tifffile.imread(tmp_path / "chunks.tif")
    assert got.dtype == want.dtype == data.dtype and got.shape == want.shape
    if data.dtype.kind == "f":
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    else:
        assert np.array_equal(got, want)
    with tifffile.TiffFile(tmp_path / "chunks.tif") as tif, tifffile.TiffFile(tmp_path / "memory.tif") as mem:
        page, kept = tif.pages[0], mem.pages[0]
        # Tiles (the input's where it had tiles), in a BigTIFF: the in-memory writer keeps a classic TIFF.
        assert tif.is_bigtiff and not mem.is_bigtiff
        assert page.is_tiled and (page.tilelength, page.tilewidth) == ((32, 48) if layout == "tiled" else (256, 256))
        assert (page.compression, page.predictor, page.photometric) == (kept.compression, kept.predictor,
                                                                        kept.photometric)
        for tag in ("XResolution", "YResolution", "ResolutionUnit", "Software"):
            assert page.tags[tag].value == kept.tags[tag].value, tag
    stride = 2 if "--stride" in args else 1
    assert page.tags["XResolution"].value[0] / page.tags["XResolution"].value[1] == 300 / stride


@pytest.mark.parametrize("args", [["--depth", "16"], ["--range", "rescale"], ["--depth", "32f"]])
def test_depth_and_range_of_a_tiff_written_from_chunks_are_those_of_memory(tmp_path, args):
    data = _image("rgb8", np.random.default_rng(5))
    source = _write(tmp_path / "in.tif", data, "tiled")
    common = ["-k", "sobel", *args]
    _filter(source, tmp_path / "memory.tif", BIG, *common)
    _filter(source, tmp_path / "chunks.tif", SMALL, *common)
    want, got = tifffile.imread(tmp_path / "memory.tif"), tifffile.imread(tmp_path / "chunks.tif")
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.kind == "f":
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    else:
        assert np.array_equal(got, want)
    if "rescale" in args:  # stretched by the whole result's bounds, not each chunk's
        assert (got.min(), got.max()) == (0, 255)


def test_planar_rgb_stays_planar(tmp_path):
    data = _image("rgb8", np.random.default_rng(1))
    source = _write(tmp_path / "in.tif", np.moveaxis(data, -1, 0), "tiled", photometric="rgb",
                    planarconfig="separate")
    _filter(source, tmp_path / "memory.tif", BIG, "-k", "gaussian:sigma=1.5", "--method", "separable")
    _filter(source, tmp_path / "chunks.tif", SMALL, "-k", "gaussian:sigma=1.5", "--method", "separable")
    assert np.array_equal(tifffile.imread(tmp_path / "chunks.tif"), tifffile.imread(tmp_path / "memory.tif"))
    with tifffile.TiffFile(tmp_path / "chunks.tif") as tif:
        assert tif.pages[0].planarconfig == 2 and tif.pages[0].photometric == 2


def test_ome_tiff_physical_sizes_feed_physical_kernels_and_follow_the_stride(tmp_path):
    volume = (np.random.default_rng(2).random((6, 160, 150)) * 4000).astype(np.uint16)
    source = str(tmp_path / "cells.ome.tif")
    tifffile.imwrite(source, volume, tile=(32, 32), compression="zlib",
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0})
    np.save(tmp_path / "cells.npy", volume)
    # 1 um is 2 pixels across and half a slice deep: the in-memory volume with those sigmas in samples.
    _filter(source, tmp_path / "out.ome.tif", "1M", "-k", "gaussian:sigma=1um", "--stride", "1,2,2",
            "--method", "separable")
    _filter(tmp_path / "cells.npy", tmp_path / "want.npy", BIG, "-k", "gaussian:sigma=0.5,2,2", "--stride", "1,2,2",
            "--method", "separable")
    want = np.load(tmp_path / "want.npy")  # a .npy keeps the floats
    with tifffile.TiffFile(tmp_path / "out.ome.tif") as tif:
        assert tif.is_ome and tif.is_bigtiff and len(tif.pages) == 6 and tif.pages[0].is_tiled
        assert tif.pages[0].tilelength == 32  # the input's tiles
        # Each sample the in-memory value rounded (a tie may round either way: float noise of other chunks).
        assert np.abs(tif.asarray() - want).max() <= 0.5 + 1e-3
        pixels = tif.ome_metadata
    assert 'PhysicalSizeX="1.0"' in pixels and 'PhysicalSizeY="1.0"' in pixels and 'PhysicalSizeZ="2.0"' in pixels


def test_a_zarr_input_writes_a_deflate_tiled_bigtiff_with_its_pixel_size(tmp_path):
    image = np.random.default_rng(3).random((300, 260)).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="w", zarr_format=3)
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.25, 0.25]}]}]}]}
    group.create_array("0", shape=image.shape, chunks=(64, 64), dtype=image.dtype)[...] = image
    _filter(tmp_path / "a.zarr", tmp_path / "out.zarr", BIG, "-k", "gaussian:sigma=2", "--stride", "2")
    _filter(tmp_path / "a.zarr", tmp_path / "out.tif", "512K", "-k", "gaussian:sigma=2", "--stride", "2")
    want = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["0"][...]
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        assert page.compression == 8 and page.predictor == 3  # Deflate, floating-point predictor
        assert np.array_equal(page.asarray(), want)
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata  # 0.25 um, strided by 2
        x, unit = page.tags["XResolution"].value, page.tags["ResolutionUnit"].value
    assert unit == 3 and x[0] / x[1] == pytest.approx(20000)  # pixels per centimetre


def test_a_tiff_over_the_budget_writes_zarr_format_3(tmp_path):
    data = _image("grey16", np.random.default_rng(4))
    source = _write(tmp_path / "in.tif", data, "tiled")
    _filter(source, tmp_path / "memory.tif", BIG, "-k", "gaussian:sigma=2", "--method", "separable")
    _filter(source, tmp_path / "out.zarr", SMALL, "-k", "gaussian:sigma=2", "--method", "separable")
    out = zarr.open(str(tmp_path / "out.zarr"), mode="r")
    node = out["0"] if isinstance(out, zarr.Group) else out  # 300 dpi is a pixel size: an OME-Zarr image
    assert node.metadata.zarr_format == 3 and node.dtype == np.uint16
    assert np.array_equal(node[...], tifffile.imread(tmp_path / "memory.tif"))


def test_alpha_is_filtered_in_chunks_only_as_a_channel(tmp_path):
    rgba = (np.random.default_rng(5).random((120, 130, 4)) * 255).astype(np.uint8)
    source = _write(tmp_path / "in.tif", rgba, "tiled", extrasamples=["unassalpha"], photometric="rgb")
    os.chdir(tmp_path)
    run = convcli("filter", "in.tif", "-k", "box:3", "-o", "out.tif", "--memory-budget", SMALL)
    assert run.exit_code == 2 and run.stderr.count("\n") == 1 and run.stderr.startswith("convcli: error: --alpha:")
    assert not os.path.exists("out.tif")
    _filter(source, tmp_path / "memory.tif", BIG, "-k", "box:3", "--alpha", "channel")
    _filter(source, tmp_path / "chunks.tif", SMALL, "-k", "box:3", "--alpha", "channel")
    assert np.array_equal(tifffile.imread("chunks.tif"), tifffile.imread("memory.tif"))
    with tifffile.TiffFile("chunks.tif") as tif:
        assert tuple(tif.pages[0].extrasamples) == (2,)


def test_memory_stays_within_the_budget_on_a_tiff_several_times_larger(tmp_path):
    rng = np.random.default_rng(6)
    data = (rng.random((1536, 1536, 3)) * 255).astype(np.uint8)  # 6.75 MiB of samples, 27 MiB as floats
    source = _write(tmp_path / "big.tif", data, "tiled")
    del data
    with peak_memory() as peak:
        report = _filter(source, tmp_path / "out.tif", "6M", "-k", "gaussian:sigma=2")
    assert report["output_shape"] == [1536, 1536, 3]
    assert peak() < (6 << 20) + (4 << 20), peak()


def test_a_damaged_tile_is_one_line_and_no_output(tmp_path):
    data = _image("rgb8", np.random.default_rng(7))
    source = _write(tmp_path / "in.tif", data, "tiled")
    with tifffile.TiffFile(source) as tif:
        offset, count = tif.pages[0].dataoffsets[5], tif.pages[0].databytecounts[5]
    raw = bytearray(open(source, "rb").read())
    raw[offset:offset + count] = b"\xff" * count  # not a Deflate stream
    (tmp_path / "bad.tif").write_bytes(bytes(raw))
    (tmp_path / "cut.tif").write_bytes(bytes(raw[:offset + count // 2]))
    for name, problem in (("bad.tif", "cannot decode the TIFF"), ("cut.tif", "truncated TIFF")):
        run = convcli("filter", str(tmp_path / name), "-k", "gaussian:sigma=1", "-o", str(tmp_path / "out.tif"),
                      "--memory-budget", SMALL)
        assert run.exit_code == 1, run.stderr
        assert run.stderr.count("\n") == 1 and problem in run.stderr, run.stderr
        assert run.stderr.startswith(f"convcli: error: {tmp_path / name}:")
        assert not (tmp_path / "out.tif").exists() and not leftovers(tmp_path)


def test_ctrl_c_leaves_nothing_under_the_destination(tmp_path):
    data = (np.random.default_rng(8).random((3000, 3000)) * 255).astype(np.uint8)
    source = _write(tmp_path / "in.tif", data, "tiled")
    dest = tmp_path / "out.tif"
    process = subprocess.Popen([sys.executable, "-m", "convcli", "filter", source, "-k", "gaussian:sigma=3",
                                "--method", "direct", "-o", str(dest), "--memory-budget", "2M"],
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not leftovers(tmp_path):  # the temporary beside it: writing began
        time.sleep(0.01)
    assert leftovers(tmp_path)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode in (-signal.SIGINT, 130), stderr
    assert not dest.exists() and not leftovers(tmp_path)


def test_only_series_0_at_full_resolution_is_read_and_a_note_says_what_was_left(tmp_path):
    image = (np.random.default_rng(9).random((256, 256)) * 255).astype(np.uint8)
    with tifffile.TiffWriter(tmp_path / "pyramid.ome.tif", bigtiff=True) as writer:
        writer.write(image, subifds=1, tile=(64, 64), metadata={"axes": "YX"})
        writer.write(image[::2, ::2], subfiletype=1, tile=(64, 64))
    with tifffile.TiffWriter(tmp_path / "two.tif") as writer:
        writer.write(image, tile=(64, 64))
        writer.write(np.zeros((40, 50, 3), np.uint8), tile=(64, 64))
    for name, note in (("pyramid.ome.tif", "only level 0 of the input's 2 resolution levels"),
                       ("two.tif", "only series 0 of the TIFF's 2 series")):
        report = _filter(tmp_path / name, tmp_path / f"out-{name}", "256K", "-k", "box:3")
        assert report["output_shape"] == [256, 256]
        assert any(n.startswith(note) for n in report["notes"]), report["notes"]
        assert tifffile.imread(tmp_path / f"out-{name}").shape == (256, 256)
