"""NumPy ``.npy`` and ``.npz`` files, read without ever unpickling and with the size checked first.

The ``.npy`` header is parsed here with a bounded length and a strict grammar
(``descr`` a plain type string, ``shape`` non-negative ints), the declared size
is compared with the bytes actually present and with the memory budget, and
only then is the data read.  ``.npz`` members go through the same parser, their
declared size checked before inflation.
"""
from __future__ import annotations

import ast
import struct

from ..errors import DataError, OutputError, UsageError
from .limits import Limits

MAGIC = b"\x93NUMPY"
MAX_HEADER = 10_000  # numpy's own default max_header_size
KIND_BY_NDIM = {1: "signal", 2: "image", 3: "volume"}
_ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float; never object, complex, dates, records


def parse_header(read, subject: str):
    """Parse an npy header from `read(n)`; return (dtype, shape, fortran_order, header_bytes)."""
    import numpy as np

    magic = read(8)
    if len(magic) < 8 or magic[:6] != MAGIC:
        raise DataError("not a .npy file (bad magic bytes)", subject=subject)
    major = magic[6]
    if major == 1:
        raw = read(2)
        if len(raw) < 2:
            raise DataError("truncated .npy header", subject=subject)
        (hlen,), prefix = struct.unpack("<H", raw), 10
    elif major in (2, 3):
        raw = read(4)
        if len(raw) < 4:
            raise DataError("truncated .npy header", subject=subject)
        (hlen,), prefix = struct.unpack("<I", raw), 12
    else:
        raise DataError(f"unsupported .npy format version {major}", subject=subject)
    if hlen > MAX_HEADER:
        raise DataError(f".npy header of {hlen:,} bytes is over the {MAX_HEADER:,}-byte limit", subject=subject)
    text = read(hlen)
    if len(text) < hlen:
        raise DataError("truncated .npy header", subject=subject)
    try:
        header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise DataError("malformed .npy header", subject=subject) from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise DataError("malformed .npy header (needs exactly descr, fortran_order and shape)", subject=subject)
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str):
        raise DataError("structured or object arrays are not supported (numbers only)", subject=subject)
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        raise DataError(f"unknown sample type {descr!r}", subject=subject) from None
    if dtype.hasobject or dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype:
        raise DataError(f"sample type {dtype} is not supported (integers, floats or bools only)", subject=subject)
    if not isinstance(fortran, bool):
        raise DataError("malformed .npy header (fortran_order is not a bool)", subject=subject)
    if not isinstance(shape, tuple) or not all(type(n) is int for n in shape):
        raise DataError("malformed .npy header (shape is not a tuple of ints)", subject=subject)
    if any(n < 0 or n >= 2**63 for n in shape):
        raise DataError(f"impossible shape {shape}", subject=subject)
    return dtype, shape, fortran, prefix + hlen


def check_shape(shape, subject: str) -> None:
    """Refuse arrays convcli cannot filter: 0-D, empty, or more than 3 axes."""
    if len(shape) == 0:
        raise DataError("holds a single number (0-D array), not a signal", subject=subject)
    if len(shape) > 3:
        raise DataError(
            f"{len(shape)}-D array of shape {shape}: convcli filters 1-D signals, 2-D images and 3-D volumes",
            subject=subject,
        )
    if any(n == 0 for n in shape):
        raise DataError(f"empty array of shape {shape}", subject=subject)


def _from_bytes(buf: bytes, dtype, shape, fortran: bool):
    import numpy as np

    arr = np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    # Native byte order and a writable, C-ordered copy: the engine and the
    # writers never see big-endian or read-only arrays.
    native = dtype.newbyteorder("=") if dtype.byteorder not in ("=", "|") else dtype
    return np.array(arr, dtype=native, order="C", copy=True)


def read_npy_stream(fh, subject: str, limits: Limits, *, available: int | None, stored: int | None = None):
    """Read one array from an open .npy stream, checking its declared size first."""
    dtype, shape, fortran, _ = parse_header(fh.read, subject)
    check_shape(shape, subject)
    count = 1
    for n in shape:
        count *= n
    nbytes = count * dtype.itemsize
    if available is not None and nbytes > available:
        raise DataError(
            f"truncated: the header declares {nbytes:,} bytes of data but only {max(available, 0):,} are present",
            subject=subject,
        )
    if stored is not None:
        limits.check_inflation(nbytes, stored, subject)
    limits.check_samples(shape, dtype.itemsize, subject, work_itemsize=8 if dtype.itemsize >= 8 else 4)
    buf = fh.read(nbytes)
    if len(buf) < nbytes:
        raise DataError(f"truncated: expected {nbytes:,} bytes of data, found {len(buf):,}", subject=subject)
    return _from_bytes(buf, dtype, shape, fortran)


def read_npy(source, limits: Limits):
    """Read a .npy source into an array of its stored type."""
    with source.open() as fh:
        dtype, shape, fortran, header_len = parse_header(fh.read, source.name)
    with source.open() as fh:
        return read_npy_stream(fh, source.name, limits, available=source.size - header_len)


def read_npz(source, limits: Limits, key: str | None):
    """Read one member of a .npz archive: `key`, or the only array it holds."""
    import zipfile
    import zlib

    with source.open() as raw:
        try:
            zf = zipfile.ZipFile(raw)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise DataError("not a readable .npz archive (corrupt or truncated zip)", subject=source.name) from None
        with zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise DataError("the archive holds two members with the same name", subject=source.name)
            arrays = {n[:-4] if n.endswith(".npy") else n: i for n, i in zip(names, infos)}
            if not arrays:
                raise DataError("the archive holds no arrays", subject=source.name)
            if key is None:
                if len(arrays) > 1:
                    listed = ", ".join(sorted(arrays)[:10])
                    # A data question, not a flag error: the same command works on single-array files.
                    raise DataError(
                        f"holds {len(arrays)} arrays ({listed}); choose one with --key NAME", subject=source.name
                    )
                key = next(iter(arrays))
            if key not in arrays:
                raise UsageError(
                    f"has no array named {key!r} (it holds {', '.join(sorted(arrays)[:10])})", subject="--key"
                )
            info = arrays[key]
            subject = f"{source.name}[{key}]"
            try:
                with zf.open(info) as member:
                    arr = read_npy_stream(
                        member, subject, limits, available=info.file_size, stored=info.compress_size
                    )
                    # Reading to the end makes zipfile verify the member's CRC.
                    if member.read(1):
                        raise DataError("the member holds more bytes than its header declares", subject=subject)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise DataError(f"corrupt archive member ({exc})", subject=subject) from None
            except NotImplementedError as exc:
                raise DataError(f"unsupported compression ({exc})", subject=subject) from None
    return arr, key


def write_npy(path: str, data) -> None:
    """Write `data` as .npy at `path` (the atomic wrapper chose the path)."""
    import numpy as np

    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, np.ascontiguousarray(data), allow_pickle=False)


def npy_output_dtype(data):
    """The float type a filtered array is stored as: float64 stays float64, all else float32."""
    import numpy as np

    return np.float64 if data.dtype == np.float64 else np.float32


def signal_from_array(arr, kind: str | None, subject: str):
    """Interpret a plain array as a Signal: by ndim, or as `kind` says.

    Without `kind`, 1-D is a signal, 2-D an image, 3-D a volume, each with one
    channel (no channel axis).  With `kind`, a last axis becomes channels where
    that reading needs one: ``signal``/``audio`` of shape (n, channels),
    ``image`` of shape (rows, columns, channels).
    """
    from .signal import Signal

    nd = arr.ndim
    if kind is None:
        return Signal(arr, kind=KIND_BY_NDIM[nd])
    if kind in ("signal", "audio") and nd in (1, 2):
        return Signal(arr, kind=kind, channel_axis=None if nd == 1 else -1)
    if kind == "image" and nd in (2, 3):
        return Signal(arr, kind=kind, channel_axis=None if nd == 2 else -1)
    if kind == "volume" and nd == 3:
        return Signal(arr, kind=kind)
    raise UsageError(f"a {nd}-D array of shape {arr.shape} cannot be read as {kind}", subject="--kind")


def read_array_signal(source, fmt: str, *, limits: Limits, kind=None, key=None, **_):
    """Reader for ``.npy``/``.npz`` sources."""
    if fmt == "npy":
        if key is not None:
            raise UsageError("--key selects an array inside a .npz archive; this input is a .npy", subject="--key")
        arr = read_npy(source, limits)
        sig = signal_from_array(arr, kind, source.name)
    else:
        arr, key = read_npz(source, limits, key)
        sig = signal_from_array(arr, kind, source.name)
        sig.meta["key"] = key
    sig.meta["format"] = fmt
    sig.meta["dtype"] = str(arr.dtype)
    return sig


def write_array_signal(sig, dest: str, fmt: str, *, compress_level=None):
    """Writer for ``.npy``/``.npz``: float32 samples (float64 kept), whatever the input's type."""
    import numpy as np

    from . import Written
    from .files import atomic_path

    data = np.asarray(sig.data)
    if data.dtype.kind not in "biuf":
        raise OutputError(f"cannot write samples of type {data.dtype}", subject=dest)
    out = data.astype(npy_output_dtype(data), copy=False)
    with atomic_path(dest) as tmp:
        if fmt == "npy":
            write_npy(tmp, out)
        else:
            key = sig.meta.get("key") or "arr_0"
            saver = np.savez if compress_level == 0 else np.savez_compressed
            with open(tmp, "wb") as fh:
                saver(fh, **{key: np.ascontiguousarray(out)})
    return Written(path=dest, format=fmt)
