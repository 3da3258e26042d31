"""Volumes: multi-page TIFF stacks and NIfTI (header, affine, voxel sizes under stride)."""
import struct
import sys

import numpy as np
import pytest
from PIL import Image

from convcli import io
from convcli.engine import correlate
from convcli.errors import DataError, UsageError
from convcli.io.grid import strided_affine
from convcli.io.samples import to_samples

RNG = np.random.default_rng(3)
KERNEL = np.zeros((3, 3, 3))
KERNEL[0, 1, 1], KERNEL[1, 1, 2], KERNEL[2, 0, 1] = 0.5, 0.3, 0.2  # asymmetric on every axis


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32])
def test_tiff_stack_round_trip(tmp_path, dtype):
    if np.dtype(dtype).kind == "f":
        vol = RNG.normal(size=(5, 7, 6)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        vol = RNG.integers(max(info.min, -30000), min(info.max, 60000), (5, 7, 6)).astype(dtype)
    sig = io.Signal(vol, kind="volume", spacing=(2.0, 0.5, 0.25), meta={"dtype": np.dtype(dtype).name})
    io.write(sig, tmp_path / "v.tif")
    back = io.read(tmp_path / "v.tif")
    assert back.kind == "volume" and back.data.dtype == dtype and back.data.shape[0] == 5
    np.testing.assert_array_equal(back.data, vol)
    assert back.spacing == pytest.approx((2.0, 0.5, 0.25))
    # every page is an ordinary TIFF page to Pillow too
    with Image.open(tmp_path / "v.tif") as im:
        assert im.n_frames == 5
        im.seek(3)
        np.testing.assert_array_equal(np.asarray(im), vol[3])
    filtered = correlate(back.data, KERNEL)
    io.write(io.derive(back, filtered), tmp_path / "f.tif")
    want = to_samples(filtered, dtype, "clip")[0]
    got = io.read(tmp_path / "f.tif").data
    assert np.abs(got.astype(np.float64) - want.astype(np.float64)).max() <= (1 if dtype != np.float32 else 1e-6)


def test_pillow_written_stack_and_single_page_kind(tmp_path):
    pages = [Image.fromarray(RNG.integers(0, 65535, (4, 5)).astype(np.uint16)) for _ in range(3)]
    pages[0].save(tmp_path / "p.tif", save_all=True, append_images=pages[1:])
    sig = io.read(tmp_path / "p.tif")
    assert sig.data.shape == (3, 4, 5) and sig.data.dtype == np.uint16
    pages[0].save(tmp_path / "one.tif")
    assert io.read(tmp_path / "one.tif").kind == "image"
    assert io.read(tmp_path / "one.tif", kind="volume").data.shape == (1, 4, 5)


def test_stack_with_different_pages_is_refused(tmp_path):
    pages = [Image.fromarray(np.zeros((4, 4), np.uint8)), Image.fromarray(np.zeros((3, 4), np.uint8))]
    pages[0].save(tmp_path / "bad.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(DataError, match="differ in size"):
        io.read(tmp_path / "bad.tif")


def test_npy_volume_stride_spacing():
    vol = io.Signal(np.zeros((8, 8, 8), np.float32), kind="volume", spacing=(1.0, 1.0, 3.0))
    assert io.derive(vol, np.zeros((4, 8, 4)), stride=(2, 1, 2)).spacing == (2.0, 1.0, 6.0)


def test_strided_affine_maps_output_voxels_to_the_same_world_points():
    affine = np.array([[0.0, -1.2, 0.0, 30.0], [0.9, 0.0, 0.1, -20.0], [0.0, 0.0, 2.5, 5.0], [0, 0, 0, 1]])
    strides, origin = (2, 3, 1), (0.5, 1.0, 0.0)
    new = strided_affine(affine, strides, origin)
    for j in [(0, 0, 0), (1, 2, 3), (4, 1, 2)]:
        input_index = [o + s * jj for o, s, jj in zip(origin, strides, j)]
        np.testing.assert_allclose(new @ [*j, 1], affine @ [*input_index, 1])


# ---- NIfTI -------------------------------------------------------------------------------------


def test_nifti_without_nibabel_says_how_to_install(tmp_path, monkeypatch):
    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4), np.float32), np.eye(4)), tmp_path / "v.nii")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel now raises ImportError
    with pytest.raises(UsageError, match=r'pip install "convcli\[nifti\]"'):
        io.read(tmp_path / "v.nii")


@pytest.mark.parametrize("ext", ["nii", "nii.gz"])
def test_nifti_keeps_affine_header_and_type(tmp_path, ext):
    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    vol = RNG.integers(-500, 1500, (9, 8, 7)).astype(np.int16)
    affine = np.array([[-0.9, 0.0, 0.0, 90.0], [0.0, 1.1, 0.1, -120.0], [0.0, 0.0, 2.5, -70.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"convcli test"
    nib.save(img, tmp_path / f"in.{ext}")
    sig = io.read(tmp_path / f"in.{ext}")
    assert sig.kind == "volume" and sig.data.dtype == np.int16
    assert sig.spacing == pytest.approx((0.9, np.hypot(1.1, 0.0), np.hypot(0.1, 2.5)), rel=1e-5)
    filtered = correlate(sig.data, KERNEL)
    io.write(io.derive(sig, filtered), tmp_path / f"out.{ext}")
    out = nib.load(tmp_path / f"out.{ext}")
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    assert out.get_data_dtype() == np.int16 and out.header["descrip"] == b"convcli test"
    want = to_samples(filtered, np.int16, "clip")[0]
    assert np.abs(np.asanyarray(out.dataobj).astype(int) - want.astype(int)).max() <= 1


def test_nifti_stride_updates_voxel_sizes_and_affine(tmp_path):
    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = (-10, -20, -30)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), affine), tmp_path / "v.nii.gz")
    sig = io.read(tmp_path / "v.nii.gz")
    small = io.derive(sig, sig.data[::2, ::2, :], stride=(2, 2, 1), origin=(0, 0, 0))
    io.write(small, tmp_path / "s.nii.gz")
    out = nib.load(tmp_path / "s.nii.gz")
    assert out.shape == (4, 4, 4)
    assert out.header.get_zooms()[:3] == pytest.approx((1.0, 1.0, 2.0))
    np.testing.assert_allclose(out.affine[:3, 3], (-10, -20, -30))
    assert small.spacing == pytest.approx((1.0, 1.0, 2.0))


def _nifti_header(dims, datatype=16, bitpix=32, vox_offset=352.0):
    hdr = bytearray(352)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, *(list(dims) + [1] * (8 - len(dims))))
    struct.pack_into("<hh", hdr, 70, datatype, bitpix)
    struct.pack_into("<f", hdr, 108, vox_offset)
    struct.pack_into("<8f", hdr, 76, *([1.0] * 8))
    hdr[344:348] = b"n+1\0"
    return bytes(hdr)


@pytest.mark.parametrize("dims,datatype,offset,message", [
    ((3, 32767, 32767, 32767), 64, 352.0, "truncated"),
    ((9, 2, 2, 2), 16, 352.0, "dimension count"),
    ((3, 8, -5, 8), 16, 352.0, "impossible NIfTI shape"),
    ((3, 2, 2, 2), 9999, 352.0, "unknown NIfTI datatype"),
    ((3, 2, 2, 2), 16, 1e9, "past the end"),
])
def test_hostile_nifti_headers_refused_before_reading(tmp_path, dims, datatype, offset, message):
    (tmp_path / "h.nii").write_bytes(_nifti_header(dims, datatype, vox_offset=offset) + bytes(64))
    with pytest.raises(DataError, match=message):
        io.read(tmp_path / "h.nii")


def test_gzip_bomb_refused(tmp_path):
    import gzip

    raw = _nifti_header((3, 512, 512, 256), datatype=16) + bytes(512 * 512 * 256 * 4)
    (tmp_path / "b.nii.gz").write_bytes(gzip.compress(raw, 1))
    with pytest.raises(DataError, match="decompression bomb"):
        io.read(tmp_path / "b.nii.gz")


def test_tiff_page_chain_loop_is_refused(tmp_path):
    io.write(io.Signal(np.zeros((3, 2, 2), np.uint8), kind="volume", meta={"dtype": "uint8"}), tmp_path / "ok.tif")
    raw = bytearray((tmp_path / "ok.tif").read_bytes())
    # Walk to the last IFD and point its "next" back at the first one.
    offset = struct.unpack_from("<I", raw, 4)[0]
    while True:
        count = struct.unpack_from("<H", raw, offset)[0]
        next_at = offset + 2 + 12 * count
        following = struct.unpack_from("<I", raw, next_at)[0]
        if following == 0:
            break
        offset = following
    struct.pack_into("<I", raw, next_at, 8)
    (tmp_path / "loop.tif").write_bytes(bytes(raw))
    assert io.read(tmp_path / "ok.tif").data.shape == (3, 2, 2)
    with pytest.raises(DataError, match="loops"):
        io.read(tmp_path / "loop.tif")
