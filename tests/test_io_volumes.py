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



# ---- NIfTI headers kept field for field (issue 13) ---------------------------------------------------------------

AFFINE = np.array([[-0.9, 0.02, 0.0, 90.0], [0.01, 1.1, 0.1, -120.0], [0.0, -0.05, 2.5, -70.0], [0, 0, 0, 1]])


def _write_raw(path, header, raw):
    """A NIfTI file byte by byte: `header` as given, `raw` samples stored as they are.

    nibabel's own save rescales integer data and rewrites the transforms;
    a test of what convcli keeps needs files that hold exactly these fields.
    """
    import gzip

    header = header.copy()
    header["vox_offset"] = 0
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as fh:
        header.write_to(fh)
        fh.write(b"\0" * (int(header["vox_offset"]) - fh.tell()))
        fh.write(np.asarray(raw, dtype=header.get_data_dtype()).tobytes(order="F"))


def _header(nib, version, raw, *, qform=True, sform=True, endian="<"):
    cls = nib.Nifti2Header if version == 2 else nib.Nifti1Header
    h = cls(endianness=endian)
    h.set_data_dtype(raw.dtype)
    h.set_data_shape(raw.shape)
    # qform and sform that differ (as they do in scanner files), each with its own code.
    h.set_qform(AFFINE @ np.diag([1.0, 1.0, 1.0002, 1.0]), code=1 if qform else 0)
    h.set_sform(AFFINE, code=2 if sform else 0)
    if not qform:
        h["quatern_b"], h["qoffset_x"] = 0.25, 7.0  # fields of an unused transform are kept as they are too
    h.set_xyzt_units("mm", "sec")
    h["descrip"] = b"convcli round trip"
    h["aux_file"] = b"aux.txt"
    h.set_intent("t test", (12.0,), name="tstat")
    h["cal_min"], h["cal_max"] = -5.0, 900.0
    h["toffset"] = 3.5
    h.set_dim_info(freq=0, phase=1, slice=2)
    h["slice_duration"], h["slice_start"], h["slice_end"], h["slice_code"] = 0.06, 0, raw.shape[2] - 1, 1
    h["pixdim"][4:] = [2.0, 0.0, 0.0, 0.0] if raw.ndim == 4 else 0.0  # TR, then unused sizes left at 0
    return h


def _fields(path):
    """Every header field as the file stores it (nibabel's loader repairs some, the raw header does not)."""
    nib = pytest.importorskip("nibabel")
    with nib.openers.ImageOpener(str(path)) as fh:
        cls = nib.Nifti2Header if fh.read(4) in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") else nib.Nifti1Header
        fh.seek(0)
        header = cls.from_fileobj(fh, check=False)
    return {k: header[k].copy() for k in header.keys()}, header


def _file_bytes(path):
    import gzip

    return gzip.open(path).read() if str(path).endswith(".gz") else path.read_bytes()


CORPUS = [
    ("qform-and-sform.nii", 1, np.int16, {}, (6, 5, 4)),
    ("qform-only.nii", 1, np.float32, {"sform": False}, (6, 5, 4)),
    ("sform-only.nii.gz", 1, np.uint8, {"qform": False}, (6, 5, 4)),
    ("neither.nii", 1, np.int32, {"qform": False, "sform": False}, (6, 5, 4)),
    ("nifti2.nii", 2, np.float64, {}, (6, 5, 4)),
    ("nifti2-sform-only.nii.gz", 2, np.int16, {"qform": False}, (6, 5, 4)),
    ("big-endian.nii", 1, np.int16, {"endian": ">"}, (6, 5, 4)),
    ("four-d-tr.nii", 1, np.int16, {}, (6, 5, 4, 3)),
    ("four-d-nifti2.nii.gz", 2, np.float32, {}, (6, 5, 4, 3)),
    ("trailing-one.nii", 1, np.float32, {}, (6, 5, 4, 1)),
]


@pytest.mark.parametrize("name,version,dtype,forms,shape", CORPUS, ids=[c[0] for c in CORPUS])
def test_identity_gives_back_the_nifti_file_byte_for_byte(tmp_path, name, version, dtype, forms, shape):
    """Every field: qform/sform codes and matrices, pixdim[0..7], intent, description, units, cal, toffset, slices."""
    from conftest import convcli

    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    raw = RNG.integers(0, 200, shape).astype(dtype)
    _write_raw(tmp_path / name, _header(nib, version, raw, **forms), raw)
    out = tmp_path / f"out-{name}"
    precision = ["--precision", "float64"] if np.dtype(dtype).itemsize >= 4 and dtype != np.float32 else []
    result = convcli("filter", tmp_path / name, "-k", "identity", "-o", out, *precision)
    assert result.exit_code == 0 and result.stderr == "", result.output
    before, after = _fields(tmp_path / name)[0], _fields(out)[0]
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert _file_bytes(out) == _file_bytes(tmp_path / name)


@pytest.mark.parametrize("ext", ["nii", "nii.gz"])
@pytest.mark.parametrize("version", [1, 2])
def test_scaled_integers_are_written_back_scaled_the_same_way(tmp_path, ext, version):
    """int16 with scl_slope/scl_inter stays int16 with the same scaling, not float64."""
    from conftest import convcli

    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    raw = RNG.integers(-3000, 3000, (7, 6, 5)).astype(np.int16)
    header = _header(nib, version, raw)
    header.set_slope_inter(0.25, -1024.0)
    _write_raw(tmp_path / f"ct.{ext}", header, raw)
    sig = io.read(tmp_path / f"ct.{ext}")
    np.testing.assert_array_equal(sig.data, raw * 0.25 - 1024.0)  # the samples are the scaled values
    result = convcli("filter", tmp_path / f"ct.{ext}", "-k", "identity", "-o", tmp_path / f"out.{ext}")
    assert result.exit_code == 0 and result.stderr == "", result.output
    fields, out = _fields(tmp_path / f"out.{ext}")
    assert out.get_data_dtype() == np.int16
    assert (float(fields["scl_slope"]), float(fields["scl_inter"])) == (0.25, -1024.0)
    assert _file_bytes(tmp_path / f"out.{ext}") == _file_bytes(tmp_path / f"ct.{ext}")
    # A filter's result is stored in the same units: value = stored * 0.25 - 1024.
    result = convcli("filter", tmp_path / f"ct.{ext}", "-k", "box:3", "--pad-mode", "edge", "-o",
                     tmp_path / f"box.{ext}")
    assert result.exit_code == 0, result.output
    img = nib.load(tmp_path / f"box.{ext}")
    assert img.get_data_dtype() == np.int16
    from scipy import ndimage

    want = ndimage.uniform_filter((raw * 0.25 - 1024.0).astype(np.float64), 3, mode="nearest")
    assert np.abs(np.asarray(img.dataobj) - want).max() <= 0.125 + 1e-3  # half a stored step


def test_scaling_too_fine_for_float32_is_read_in_float64_and_still_comes_back_exact(tmp_path):
    from conftest import convcli

    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    raw = RNG.integers(-32768, 32767, (5, 4, 3)).astype(np.int16)
    header = _header(nib, 1, raw)
    header.set_slope_inter(1e-4, 5000.0)  # 5000 / 1e-4 = 5e7 steps: past float32's 24 bits
    _write_raw(tmp_path / "fine.nii", header, raw)
    assert io.read(tmp_path / "fine.nii").data.dtype == np.float64
    assert convcli("filter", tmp_path / "fine.nii", "-k", "identity", "-o", tmp_path / "out.nii").exit_code == 0
    assert (tmp_path / "out.nii").read_bytes() == (tmp_path / "fine.nii").read_bytes()


def test_a_stride_moves_both_transforms_and_the_voxel_sizes_and_keeps_the_rest(tmp_path):
    """Output voxel j lies where input voxel origin + stride * j lay, in the qform's world and in the sform's."""
    from conftest import convcli

    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    raw = RNG.integers(0, 1000, (12, 10, 9, 2)).astype(np.int16)
    _write_raw(tmp_path / "v.nii", _header(nib, 1, raw), raw)
    result = convcli("filter", tmp_path / "v.nii", "-k", "box:3", "--padding", "valid", "--stride", "2,3,1",
                     "-o", tmp_path / "s.nii")
    assert result.exit_code == 0, result.output
    (before, hin), (after, hout) = _fields(tmp_path / "v.nii"), _fields(tmp_path / "s.nii")
    assert tuple(after["dim"][:5]) == (4, 5, 3, 7, 2)
    np.testing.assert_allclose(after["pixdim"][1:4], before["pixdim"][1:4] * [2, 3, 1], rtol=1e-6)
    np.testing.assert_array_equal(after["pixdim"][[0, 4, 5, 6, 7]], before["pixdim"][[0, 4, 5, 6, 7]])
    origin = np.array([1, 1, 1])  # a valid 3-tap window's first output sits on input voxel 1
    for form in ("get_qform", "get_sform"):
        for j in [(0, 0, 0), (1, 2, 3), (4, 2, 6)]:
            i = origin + np.array([2, 3, 1]) * j
            np.testing.assert_allclose(getattr(hout, form)() @ [*j, 1], getattr(hin, form)() @ [*i, 1], atol=1e-4)
    changed = {"dim", "pixdim", "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z"}
    for key in set(before) - changed:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_cifti2_is_refused_as_what_it_is(tmp_path):
    """A CIFTI-2 .dconn.nii is a NIfTI-2 file of brain-model matrices, not voxels: one line naming it, exit 1."""
    from conftest import convcli

    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    from nibabel import cifti2

    axis = cifti2.BrainModelAxis.from_mask(np.ones(5, bool), name="thalamus_left")
    img = cifti2.Cifti2Image(np.eye(5, dtype=np.float32), cifti2.Cifti2Header.from_axes((axis, axis)))
    img.nifti_header.set_intent("ConnDense")
    nib.save(img, tmp_path / "x.dconn.nii")
    result = convcli("filter", tmp_path / "x.dconn.nii", "-k", "identity", "-o", tmp_path / "y.nii")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"convcli: error: {tmp_path / 'x.dconn.nii'}: a CIFTI-2 dense connectivity file (.dconn) (NIfTI intent code "
        "3001), not a volume: its samples are not a grid of voxels"]
    assert not (tmp_path / "y.nii").exists()


def test_stereo_audio_to_nifti_keeps_channels_in_the_fourth_dimension(tmp_path):
    from conftest import convcli

    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    import soundfile as sf

    samples = RNG.integers(-30000, 30000, (40000, 2)).astype(np.int16)  # longer than NIfTI-1's 32767
    sf.write(tmp_path / "st.wav", samples, 8000, subtype="PCM_16")
    result = convcli("filter", tmp_path / "st.wav", "-k", "identity", "-o", tmp_path / "st.nii")
    assert result.exit_code == 0 and result.stderr == "", result.output
    img = nib.load(tmp_path / "st.nii")
    assert isinstance(img, nib.Nifti2Image) and img.shape == (40000, 1, 1, 2) and img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(img.dataobj)[:, 0, 0, :], samples)


def test_int64_arrays_are_written_as_int64_nifti(tmp_path):
    from conftest import convcli

    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    arr = np.arange(-30, 30, dtype=np.int64).reshape(3, 4, 5) * (1 << 40)
    np.save(tmp_path / "a.npy", arr)
    result = convcli("filter", tmp_path / "a.npy", "-k", "identity", "-o", tmp_path / "a.nii", "--precision", "float64")
    assert result.exit_code == 0, result.output
    img = nib.load(tmp_path / "a.nii")
    assert img.get_data_dtype() == np.int64
    np.testing.assert_array_equal(np.asarray(img.dataobj), arr)


def test_raw_header_oddities_are_kept_not_repaired(tmp_path):
    """A qfac of 0 and zero voxel sizes are what the file says; nibabel's loader repairs them, the output must not."""
    from conftest import convcli

    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    raw = RNG.standard_normal((4, 5, 6)).astype(np.float32)
    header = _header(nib, 1, raw, qform=False, sform=False)
    header["pixdim"][0], header["pixdim"][3] = 0.0, 0.0
    _write_raw(tmp_path / "odd.nii", header, raw)
    result = convcli("filter", tmp_path / "odd.nii", "-k", "identity", "-o", tmp_path / "out.nii")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.nii").read_bytes() == (tmp_path / "odd.nii").read_bytes()


@pytest.mark.parametrize("intent,what", [(1008, "a NIfTI point set"), (3006, "a CIFTI-2 dense scalar file")])
def test_non_volume_intents_are_refused_before_reading(tmp_path, intent, what):
    raw = _nifti_header((3, 2, 2, 2))
    raw = raw[:68] + struct.pack("<h", intent) + raw[70:]
    (tmp_path / "p.nii").write_bytes(raw + bytes(32))
    with pytest.raises(DataError, match=what):
        io.read(tmp_path / "p.nii")
