"""Hostile input files built here, byte by byte: each is refused in one line, fast, and leaves nothing behind.

These are the project's own copies of the hostile corpus's lessons (they run
without ``../shared``): truncated and bomb images, lying audio headers,
``.npy`` headers declaring huge shapes or pickled objects, non-finite samples
bound for integer files, and kernel files that break the grammar.
"""
from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

from convcli import io
from conftest import convcli
from convcli.errors import DataError, KernelFileError



def filter_cli(*args):
    return convcli("filter", *map(str, args))


def assert_refused(result, code: int, *needles: str, output=None) -> str:
    """Exit `code`, exactly one ``convcli: error:`` line naming the problem, no output file."""
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("convcli: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output
    if output is not None:
        assert not output.exists()
        assert not [p for p in output.parent.iterdir() if "convcli-tmp" in p.name]
    return lines[0]


# ---------------------------------------------------------------- builders
def png_bytes(width: int, height: int, rows: bytes | None = None, *, ihdr=None) -> bytes:
    """An 8-bit grey PNG; `ihdr` overrides the declared (width, height)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    w, h = ihdr or (width, height)
    if rows is None:
        rows = b"".join(b"\0" + bytes((x * 9 + y) & 255 for x in range(width)) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def wav_bytes(samples: bytes, *, data_size=None, channels=1, rate=8000, bits=16, fmt_tag=1) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits)
    size = len(samples) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + samples
    return b"RIFF" + struct.pack("<I", len(body)) + body


def npy_bytes(descr: str, shape: str, payload: bytes = b"") -> bytes:
    header = "{'descr': %s, 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + payload


# A pickle that would create this file if anything ever unpickled it.
CANARY = "hardening_canary"
PICKLE = b"\x80\x02cbuiltins\nopen\nq\x00X" + struct.pack("<I", len(CANARY)) + CANARY.encode() + b"X\x01\x00\x00\x00a\x86R."


# ---------------------------------------------------------------- images
def test_truncated_png_is_one_line_and_leaves_nothing(tmp_path):
    good = png_bytes(16, 16)
    (tmp_path / "cut.png").write_bytes(good[: len(good) - 30])
    out = tmp_path / "out.png"
    assert_refused(filter_cli(tmp_path / "cut.png", "-k", "box:3", "-o", out), 1, "cut.png", "truncated", output=out)


def test_bomb_header_is_refused_fast_and_small(tmp_path):
    """A 16x16 PNG whose header claims 100000x100000 is refused from the header: < 0.5 s and < 64 MB."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(16, 16, ihdr=(100000, 100000)))
    probe = textwrap.dedent(f"""
        import resource, time
        from convcli import io
        from convcli.errors import DataError
        import PIL.Image  # imported before measuring: the read itself is what is timed
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            io.read({str(bomb)!r})
        except DataError as exc:
            message = exc.message
        else:
            message = "accepted"
        seconds = time.perf_counter() - start
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(seconds, grown, message)
    """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    seconds, grown_mib, message = proc.stdout.split(" ", 2)
    assert "10,000,000,000 pixels" in message and "--max-pixels" in message, proc.stdout + proc.stderr
    assert float(grown_mib) < 64  # refused from the header: nothing of the 30 GB it claims was decoded


def test_pillow_warning_zone_is_an_error(tmp_path):
    """Pillow only warns between its limit and twice it; convcli refuses anything over --max-pixels."""
    path = tmp_path / "wide.png"
    path.write_bytes(png_bytes(40, 30))
    with pytest.raises(DataError, match="1,200 pixels is over the limit of 1,000"):
        io.read(path, max_pixels=1000)
    assert io.read(path, max_pixels=1200).data.shape == (30, 40)


# ---------------------------------------------------------------- audio
def test_lying_wav_header_allocates_only_what_is_there(tmp_path):
    """The data chunk claims 4 GB; the samples present are read, nothing more."""
    samples = np.arange(-50, 50, dtype="<i2") * 300
    path = tmp_path / "liar.wav"
    path.write_bytes(wav_bytes(samples.tobytes(), data_size=0xFFFFFFF0))
    sig = io.read(path)
    assert sig.data.dtype == np.int16 and sig.data.shape == (100,)
    np.testing.assert_array_equal(sig.data, samples)


@pytest.mark.parametrize("header, needle", [
    (dict(channels=0), "channel"),
    (dict(rate=0), "rate"),
])
def test_impossible_wav_headers(tmp_path, header, needle):
    path, out = tmp_path / "bad.wav", tmp_path / "out.wav"
    path.write_bytes(wav_bytes(bytes(400), **header))
    assert_refused(filter_cli(path, "-k", "box:3", "-o", out), 1, "bad.wav", output=out)


# ---------------------------------------------------------------- arrays
def test_npy_declaring_a_huge_shape_is_refused_before_reading(tmp_path):
    path, out = tmp_path / "huge.npy", tmp_path / "out.npy"
    path.write_bytes(npy_bytes("'<f8'", "(65536, 65536, 16)", bytes(64)))
    line = assert_refused(filter_cli(path, "-k", "box:3", "-o", out), 1, "huge.npy", "truncated", output=out)
    assert "549,755,813,888 bytes" in line


def test_npy_over_the_memory_budget_is_refused_from_its_header(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.zeros((64, 64, 64), np.float32))  # 1 MiB of samples, ~3 MiB to filter
    with pytest.raises(DataError, match="memory budget"):
        io.read(path, memory_budget="1M")


def test_object_npy_is_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, out = tmp_path / "obj.npy", tmp_path / "out.npy"
    path.write_bytes(npy_bytes("'|O'", "(1,)", PICKLE))
    assert_refused(filter_cli(path, "-k", "box:3", "-o", out), 1, "obj.npy", "object", output=out)
    kernel = tmp_path / "k.npy"
    kernel.write_bytes(npy_bytes("'|O'", "(1,)", PICKLE))
    np.save(tmp_path / "x.npy", np.zeros(8))
    assert_refused(filter_cli(tmp_path / "x.npy", "-k", kernel, "-o", out), 1, "k.npy", "object", output=out)
    assert not (tmp_path / CANARY).exists()


def test_npy_header_grammar(tmp_path):
    cases = {
        "shape_negative.npy": npy_bytes("'<f4'", "(-1, 4)", bytes(16)),
        "shape_2pow64.npy": npy_bytes("'<f4'", "(18446744073709551616,)"),
        "descr_tuple.npy": npy_bytes("('|u1',)", "(4,)", bytes(4)),
        "structured.npy": npy_bytes("[('a', '<f4')]", "(4,)", bytes(16)),
        "complex.npy": npy_bytes("'<c8'", "(2,)", bytes(16)),
        "header_4gb.npy": b"\x93NUMPY\x02\x00" + struct.pack("<I", 4_000_000_000) + b"{'descr'",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError) as info:
            io.read(tmp_path / name)
        assert info.value.subject == str(tmp_path / name)


# ---------------------------------------------------------------- non-finite samples
def test_nan_samples_into_an_integer_output_are_refused_with_a_count(tmp_path):
    data = np.full((6, 6), 100.0, np.float32)
    data[1, 1] = np.nan
    data[4, 4] = np.inf
    src, out = tmp_path / "nan.npy", tmp_path / "out.png"
    np.save(src, data)
    # a 3x3 window spreads each non-finite sample to its 9 neighbours
    line = assert_refused(filter_cli(src, "-k", "box:3", "-o", out), 1, "nan.npy", output=out)
    assert "18 non-finite samples" in line and "cannot be written as uint" in line


@pytest.mark.parametrize("side", [9, 1500])  # 1500: enough work for the engine's band threads
def test_non_finite_samples_stay_in_float_outputs_with_no_numpy_warning(tmp_path, side):
    data = np.full((side, side), 1.0, np.float32)
    data[4, 4] = np.nan
    data[6, 6], data[6, 7] = np.inf, -np.inf  # inf - inf: numpy's "invalid value" case
    src, out = tmp_path / "nan.npy", tmp_path / "out.npy"
    np.save(src, data)
    for kernel in ("[[1,2,1],[0,5,0],[1,-2,1]]", "box:3"):  # box last: its result is checked
        proc = subprocess.run([sys.executable, "-W", "default", "-m", "convcli", "filter", src, "-k", kernel,
                               "--method", "direct", "-o", out], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stderr == ""
    result = np.load(out)
    assert np.isnan(result[3:6, 3:6]).all() and np.isfinite(result[:, 9:]).all()


# ---------------------------------------------------------------- kernel files
KERNEL_FILES = [
    ("bad.txt", "1 2 a\n4 5 6\n", "line 1, column 3: 'a' is not a number"),
    ("under.txt", "1 1_000 1\n", "line 1, column 2: '1_000' is not a number"),
    ("ragged.txt", "1 2 3\n4 5\n", "row 2 (line 2) has 2 numbers, but row 1 has 3"),
    ("nan.txt", "1 1\n1 nan\n", "line 2, column 2: 'nan' is not a finite number"),
    ("inf.txt", "1 -inf\n", "line 1, column 2: '-inf' is not a finite number"),
    ("empty.txt", "  \n# only a comment\n", "the kernel is empty"),
    ("huge.txt", "1e300 1\n", "overflow"),
    ("nan.json", "[[NaN, 1], [1, 1]]", "NaN is not a finite number"),
    ("bools.json", "[[true, false], [false, true]]", "row 1, column 1 holds true, not a number"),
    ("strings.json", '[["1", "2"]]', 'row 1, column 1 holds "1", not a number'),
    ("ragged.json", "[[1, 2], [3]]", "ragged matrix: row 2 has 1 value"),
    ("empty_rows.json", "[[], []]", "row 1 is empty"),
    ("deep.json", "[" * 50000 + "1" + "]" * 50000, "nested too deeply"),
    ("digits.json", "[[" + "9" * 5000 + "]]", "thousands of digits"),
    ("big_int.json", "[[" + "9" * 400 + "]]", "too large for a weight"),
    ("utf16.txt", "1 1\n".encode("utf-16"), "not UTF-8 text"),
]


@pytest.mark.parametrize("name, content, needle", KERNEL_FILES, ids=[k[0] for k in KERNEL_FILES])
def test_broken_kernel_files_name_the_place_and_exit_1(tmp_path, name, content, needle):
    kernel = tmp_path / name
    kernel.write_bytes(content if isinstance(content, bytes) else content.encode())
    np.save(tmp_path / "x.npy", np.zeros((5, 5)))
    out = tmp_path / "out.npy"
    assert_refused(filter_cli(tmp_path / "x.npy", "-k", kernel, "-o", out), 1, f"{kernel}: ", needle, output=out)


def test_a_broken_inline_kernel_stays_a_usage_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 5)))
    out = tmp_path / "out.npy"
    assert_refused(filter_cli(tmp_path / "x.npy", "-k", "[[1, NaN]]", "-o", out), 2, "NaN", output=out)


def test_kernel_npy_declaring_a_huge_shape_allocates_nothing(tmp_path):
    from convcli.kernels import resolve

    kernel = tmp_path / "huge.npy"
    kernel.write_bytes(npy_bytes("'<f8'", "(65536, 65536)", bytes(64)))
    with pytest.raises(KernelFileError, match="more than"):
        resolve(str(kernel), ndim=2)
    kernel.write_bytes(npy_bytes("'<f8'", "(3, 3)", bytes(40)))
    with pytest.raises(KernelFileError, match="truncated"):
        resolve(str(kernel), ndim=2)


def test_kernel_file_size_is_capped(tmp_path, monkeypatch):
    from convcli.kernels import files, resolve

    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    kernel = tmp_path / "long.txt"
    kernel.write_text(" ".join(["1"] * 100) + "\n")
    with pytest.raises(KernelFileError, match="too large for a kernel file"):
        resolve(str(kernel), ndim=1)


def test_a_flac_header_claiming_billions_of_samples_is_refused_from_the_header(tmp_path):
    import soundfile as sf

    path = tmp_path / "liar.flac"
    sf.write(path, np.zeros(4000, np.float32), 8000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    # STREAMINFO (after "fLaC" and its 4-byte block header): the low 36 bits of bytes 10..17 count the samples
    field = int.from_bytes(raw[18:26], "big")
    raw[18:26] = ((field & ~((1 << 36) - 1)) | ((1 << 36) - 1)).to_bytes(8, "big")
    path.write_bytes(bytes(raw))
    out = tmp_path / "out.flac"
    assert_refused(filter_cli(path, "-k", "box:3", "--memory-budget", "64M", "-o", out), 1, "liar.flac",
                   "68719476735x1 samples", "memory budget", output=out)
