"""Reading and writing .npy/.npz: stored types kept, hostile headers refused before allocation, atomic writes."""
import os
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convcli import io
from convcli.errors import DataError, OutputError, UsageError


def _npy_with_header(path, header: str, data: bytes = b"", version: int = 1):
    text = header.encode("latin1")
    if version == 1:
        raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text
    else:
        raw = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(text)) + text
    path.write_bytes(raw + data)
    return path


@pytest.mark.parametrize(
    "shape,kind", [((7,), "signal"), ((5, 6), "image"), ((3, 4, 5), "volume")]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16, ">f8", np.float16])
def test_npy_read_keeps_type_and_kind(tmp_path, shape, kind, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.random(shape) * 100).astype(dtype)
    np.save(tmp_path / "a.npy", arr)
    sig = io.read(tmp_path / "a.npy")
    assert sig.kind == kind and sig.channel_axis is None
    assert sig.data.dtype == np.dtype(dtype).newbyteorder("=")
    assert sig.data.dtype.isnative and sig.data.flags.c_contiguous and sig.data.flags.writeable
    np.testing.assert_array_equal(sig.data, arr)
    assert sig.meta["format"] == "npy"


def test_fortran_order_does_not_flip_axes(tmp_path):
    arr = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    np.save(tmp_path / "f.npy", arr)
    np.testing.assert_array_equal(io.read(tmp_path / "f.npy").data, arr)


@pytest.mark.parametrize("dtype,expect", [(np.float64, np.float64), (np.float32, np.float32),
                                          (np.uint8, np.float32), (np.int16, np.float32)])
def test_npy_write_float32_or_float64(tmp_path, dtype, expect):
    sig = io.Signal(np.arange(6, dtype=dtype).reshape(2, 3), kind="image")
    report = io.write(sig, tmp_path / "o.npy")
    out = np.load(tmp_path / "o.npy")
    assert out.dtype == expect and report.format == "npy"
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3))


def test_npz_key_and_single_member(tmp_path):
    np.savez(tmp_path / "one.npz", vol=np.ones((2, 3, 4), np.float32))
    sig = io.read(tmp_path / "one.npz")
    assert sig.kind == "volume" and sig.meta["key"] == "vol"
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.ones((2, 2)))
    with pytest.raises(DataError, match="--key"):
        io.read(tmp_path / "two.npz")
    assert io.read(tmp_path / "two.npz", key="b").kind == "image"
    with pytest.raises(UsageError) as err:
        io.read(tmp_path / "two.npz", key="c")
    assert err.value.subject == "--key"
    io.write(sig, tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz") as z:
        assert list(z.keys()) == ["vol"] and z["vol"].dtype == np.float32


def test_kind_override_reads_channels_last(tmp_path):
    np.save(tmp_path / "st.npy", np.zeros((100, 2), np.float32))
    sig = io.read(tmp_path / "st.npy", kind="audio")
    assert sig.kind == "audio" and sig.channel_axis == -1 and sig.spatial_shape == (100,)
    np.save(tmp_path / "rgb.npy", np.zeros((4, 5, 3), np.uint8))
    assert io.read(tmp_path / "rgb.npy", kind="image").spatial_ndim == 2
    with pytest.raises(UsageError):
        io.read(tmp_path / "st.npy", kind="volume")
    with pytest.raises(UsageError):
        io.read(tmp_path / "st.npy", kind="sound")


HOSTILE_HEADERS = {
    "object": ("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", "not supported"),
    "structured": ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "structured"),
    "short_tuple": ("{'descr': ('<f4',), 'fortran_order': False, 'shape': (1,), }", "structured"),
    "complex": ("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", "not supported"),
    "datetime": ("{'descr': '<M8[s]', 'fortran_order': False, 'shape': (2,), }", "not supported"),
    "negative": ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4), }", "impossible shape"),
    "overflow": ("{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551616,), }", "impossible"),
    "zero_d": ("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", "0-D"),
    "five_d": ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1), }", "5-D"),
    "empty": ("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 0, 4), }", "empty array"),
    "unterminated": ("{'descr': '<f4', 'fortran_order': False, 'shape': (4,", "malformed"),
    "bomb": ("{'descr': '<f8', 'fortran_order': False, 'shape': (65536, 65536, 16), }", "truncated"),
    "call": ("{'descr': __import__('os').system('true'), 'fortran_order': False, 'shape': (1,)}", "malformed"),
    "call_after_long": ("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, __import__('os')), }", "malformed"),
    "bare_long": ("{'descr': '<f4', 'fortran_order': L, 'shape': (2L,), }", "malformed"),
    "long_in_descr": ("{'descr': '<f4L', 'fortran_order': False, 'shape': (2L,), }", "unknown sample type"),
    "long_bomb": ("{'descr': '<f8', 'fortran_order': False, 'shape': (65536L, 65536L, 16L), }", "truncated"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_hostile_npy_headers_are_data_errors(tmp_path, case):
    header, message = HOSTILE_HEADERS[case]
    path = _npy_with_header(tmp_path / f"{case}.npy", header, b"\0" * 64)
    with pytest.raises(DataError, match=message) as err:
        io.read(path)
    assert err.value.subject == str(path)


def _python2_header(arr) -> str:
    """The header numpy wrote for `arr` under Python 2: every dimension a long, ``(2L, 3L)``."""
    dims = "".join(f"{n}L, " for n in arr.shape).rstrip(" ") if arr.ndim > 1 else f"{arr.shape[0]}L,"
    order = arr.flags.f_contiguous and not arr.flags.c_contiguous
    return f"{{'descr': '{arr.dtype.str}', 'fortran_order': {order}, 'shape': ({dims}), }}"


def _python2_npy(path, arr, version=1):
    """`arr` saved as numpy did under Python 2 (the header padded to 16 bytes with a newline, as then)."""
    text = _python2_header(arr)
    prefix = 10 if version == 1 else 12
    text += " " * (-(prefix + len(text) + 1) % 16) + "\n"
    data = arr.tobytes(order="F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C")
    return _npy_with_header(path, text, data, version=version)


def test_python2_headers_are_read_as_numpy_reads_them(tmp_path):
    """numpy.load reads "(2L,)" shapes from files written under Python 2; so does convcli."""
    from conftest import convcli

    path = _python2_npy(tmp_path / "old.npy", np.array([1.5, 2.5]))
    with pytest.warns(UserWarning, match="Python 2"):
        expected = np.load(path)
    np.testing.assert_array_equal(io.read(path).data, expected)
    result = convcli("filter", path, "-k", "identity", "-o", tmp_path / "new.npy")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "new.npy"), [1.5, 2.5])


@settings(max_examples=40)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), dtype=st.sampled_from(["<f4", ">f8", "<i2", "|u1",
                                                                                           ">u2", "|b1"]),
       fortran=st.booleans(), version=st.sampled_from([1, 2]))
def test_every_python2_npy_numpy_loads_convcli_reads_alike(tmp_path_factory, shape, dtype, fortran, version):
    import warnings

    rng = np.random.default_rng(len(shape) * 10 + version)
    arr = (rng.random(shape) * 100).astype(dtype)
    arr = np.asfortranarray(arr) if fortran else arr
    path = _python2_npy(tmp_path_factory.mktemp("py2") / "a.npy", arr, version=version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = np.load(path)
    got = io.read(path).data
    assert got.dtype == expected.dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, expected)


def test_version_3_headers_stay_python3_only(tmp_path):
    """numpy drops the L only from version 1 and 2 headers (version 3 came after Python 2); so does convcli."""
    text = "{'descr': '<f8', 'fortran_order': False, 'shape': (2L,), }"
    raw = b"\x93NUMPY\x03\x00" + struct.pack("<I", len(text)) + text.encode()
    (tmp_path / "v3.npy").write_bytes(raw + np.zeros(2).tobytes())
    with pytest.raises(ValueError):
        np.load(tmp_path / "v3.npy")
    with pytest.raises(DataError, match="malformed"):
        io.read(tmp_path / "v3.npy")


def test_header_length_is_bounded(tmp_path):
    path = tmp_path / "h.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 4_000_000_000) + b"{'descr'")
    with pytest.raises(DataError, match="over the 10,000-byte limit"):
        io.read(path)


def test_truncated_data_and_bad_magic(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros(100, np.float32))
    raw = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:-8])
    with pytest.raises(DataError, match="truncated"):
        io.read(tmp_path / "t.npy")
    (tmp_path / "m.npy").write_bytes(b"\x93NUMPX" + raw[6:])
    with pytest.raises(DataError):
        io.read(tmp_path / "m.npy")


def test_memory_budget_checked_before_reading(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((64, 64, 64), np.float32))  # 1 MiB of samples, ~3 MiB to filter
    with pytest.raises(DataError, match="memory budget"):
        io.read(tmp_path / "v.npy", memory_budget="2M")
    assert io.read(tmp_path / "v.npy", memory_budget="8M").data.shape == (64, 64, 64)


def test_npz_bomb_refused_from_the_declared_size(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (1024, 1024, 80)})
            chunk = bytes(1 << 20)
            for _ in range(320):
                fh.write(chunk)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(DataError, match="decompression bomb"):
        io.read(path)


def test_npz_corruption_and_object_members(tmp_path):
    np.savez(tmp_path / "ok.npz", a=np.arange(50, dtype=np.float32))
    raw = bytearray((tmp_path / "ok.npz").read_bytes())
    (tmp_path / "cut.npz").write_bytes(bytes(raw[:60]))
    with pytest.raises(DataError):
        io.read(tmp_path / "cut.npz")
    i = raw.index(b"\x00\x00\x80\x3f")  # the float 1.0 inside the stored member
    raw[i + 3] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt"):
        io.read(tmp_path / "crc.npz")
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(DataError, match="not supported"):
        io.read(tmp_path / "obj.npz")


def test_zero_byte_and_missing_and_folder(tmp_path):
    (tmp_path / "z.npy").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        io.read(tmp_path / "z.npy")
    with pytest.raises(DataError, match="no such file"):
        io.read(tmp_path / "nope.npy")
    with pytest.raises(DataError, match="folder"):
        io.read(tmp_path)


def test_content_not_matching_extension(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    os.rename(tmp_path / "a.npy", tmp_path / "a.wav")
    with pytest.raises(DataError, match="name says WAV audio"):
        io.read(tmp_path / "a.wav")
    (tmp_path / "t.npy").write_text("hello, not an array\n")
    with pytest.raises(DataError, match="not a NumPy array"):
        io.read(tmp_path / "t.npy")


# ---- atomic writes -------------------------------------------------------------------------


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if "convcli-tmp" in p.name)


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.npy"
    target.write_bytes(b"previous")
    bad = io.Signal(np.array([1.0, np.nan]), kind="signal", meta={"format": "npy"})
    bad.data = np.array(["a", "b"])  # strings cannot be written
    with pytest.raises(OutputError):
        io.write(bad, target)
    assert target.read_bytes() == b"previous" and _leftovers(tmp_path) == []


def test_interrupted_write_removes_the_temporary(tmp_path, monkeypatch):
    from convcli.io import arrays

    def boom(path, data):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(arrays, "write_npy", boom)
    with pytest.raises(KeyboardInterrupt):
        io.write(io.Signal(np.zeros(3)), tmp_path / "o.npy")
    assert list(tmp_path.iterdir()) == []


def test_write_errors_name_the_output(tmp_path):
    sig = io.Signal(np.zeros(3))
    with pytest.raises(OutputError, match="folder does not exist") as err:
        io.write(sig, tmp_path / "missing" / "o.npy")
    assert err.value.subject == str(tmp_path / "missing" / "o.npy")
    with pytest.raises(UsageError, match="extension"):
        io.write(sig, tmp_path / "o.xyz")
    with pytest.raises(UsageError):
        io.write(sig, tmp_path / "o.npy", format="bogus")


def test_written_file_has_normal_permissions(tmp_path):
    io.write(io.Signal(np.zeros(3)), tmp_path / "o.npy")
    mode = (tmp_path / "o.npy").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_derive_updates_rate_spacing_and_dpi():
    sig = io.Signal(np.zeros(100), kind="audio", sample_rate=48000.0)
    assert io.derive(sig, np.zeros(50), stride=2).sample_rate == 24000.0
    vol = io.Signal(np.zeros((4, 4, 4)), kind="volume", spacing=(1.0, 0.5, 0.5))
    assert io.derive(vol, np.zeros((2, 4, 2)), stride=(2, 1, 2)).spacing == (2.0, 0.5, 1.0)
    img = io.Signal(np.zeros((8, 8)), kind="image", meta={"dpi": (300.0, 150.0)})
    out = io.derive(img, np.zeros((4, 8)), stride=(2, 1))
    assert out.meta["dpi"] == (300.0, 75.0) and img.meta["dpi"] == (300.0, 150.0)
