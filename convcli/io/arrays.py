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
        header = _literal(text.decode("utf-8" if major == 3 else "latin1"), python2=major in (1, 2))
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
    if not isinstance(shape, tuple) or not all(isinstance(n, int) for n in shape):
        raise DataError("malformed .npy header (shape is not a tuple of ints)", subject=subject)
    if any(n < 0 or n >= 2**63 for n in shape):
        raise DataError(f"impossible shape {shape}", subject=subject)
    return dtype, shape, fortran, prefix + hlen


def _literal(text: str, *, python2: bool):
    """The header's dict, read by ``ast.literal_eval`` (literals only: no name is looked up, no code runs).

    Files written by numpy under Python 2 give shapes as longs, ``(2L, 3L)``,
    which Python 3 cannot read; as ``numpy.load`` does for format versions
    1 and 2, such a header is read again with the ``L`` after each number
    dropped.
    """
    try:
        return ast.literal_eval(text)
    except SyntaxError:
        if not python2:
            raise
    return ast.literal_eval(_without_long_suffixes(text))


def _without_long_suffixes(text: str) -> str:
    """`text` with every ``L``/``l`` that directly follows a number removed, token by token (strings untouched)."""
    import io
    import tokenize

    kept, after_number = [], False
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if after_number and token.type == tokenize.NAME and token.string in ("L", "l"):
                after_number = False
                continue
            kept.append((token.type, token.string))
            after_number = token.type == tokenize.NUMBER
    except (tokenize.TokenError, IndentationError) as exc:
        raise SyntaxError(str(exc)) from None
    return tokenize.untokenize(kept)


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
    if not hasattr(fh, "readinto"):
        buf = fh.read(nbytes)
        if len(buf) < nbytes:
            raise DataError(f"truncated: expected {nbytes:,} bytes of data, found {len(buf):,}", subject=subject)
        return _from_bytes(buf, dtype, shape, fortran)
    return _read_into(fh, dtype, shape, fortran, nbytes, subject)


def _read_into(fh, dtype, shape, fortran: bool, nbytes: int, subject: str):
    """The samples read straight into their array: no bytes object beside it (a volume costs its size once).

    Byte order is made native in place; only a Fortran-ordered file is copied
    into C order.
    """
    import numpy as np

    stored = np.empty(tuple(reversed(shape)) if fortran else shape, dtype=dtype)
    view = memoryview(stored.reshape(-1).view(np.uint8))
    got = 0
    while got < nbytes:
        n = fh.readinto(view[got:])
        if not n:
            raise DataError(f"truncated: expected {nbytes:,} bytes of data, found {got:,}", subject=subject)
        got += n
    if dtype.byteorder not in ("=", "|"):
        stored = stored.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return np.ascontiguousarray(stored.T) if fortran else stored


def read_npy(source, limits: Limits, *, stream: bool = False):
    """Read a .npy source into an array of its stored type.

    With ``stream``, a file too large for the memory budget is memory-mapped
    read-only instead of refused (see :func:`map_npy`); the second value
    returned says whether it was.
    """
    with source.open() as fh:
        dtype, shape, fortran, header_len = parse_header(fh.read, source.name)
    if stream and source.path is not None:
        check_shape(shape, source.name)
        try:
            limits.check_samples(shape, dtype.itemsize, source.name, work_itemsize=8 if dtype.itemsize >= 8 else 4)
        except DataError as refusal:
            return map_npy(source, dtype, shape, fortran, header_len, refusal), True
    with source.open() as fh:
        return read_npy_stream(fh, source.name, limits, available=source.size - header_len), False


def map_npy(source, dtype, shape, fortran: bool, header_len: int, refusal: DataError):
    """Memory-map a .npy file, read-only, once our own header parse has vetted it.

    Our parser stays the gate (numbers only, no pickle, bounded header); the
    declared size must be exactly what the file holds after the header, and
    the samples must be in C order, so that rows along the first axis are
    contiguous and a band of them is a contiguous range of pages.
    """
    import numpy as np

    nbytes = dtype.itemsize
    for n in shape:
        nbytes *= n
    present = source.size - header_len
    if nbytes != present:
        what = "truncated: the header declares" if nbytes > present else "the header declares only"
        raise DataError(f"{what} {nbytes:,} bytes of data but {max(present, 0):,} are present", subject=source.name)
    if fortran:
        raise DataError(f"{refusal.message}; a Fortran-ordered array cannot be streamed", subject=source.name)
    try:
        arr = np.load(source.path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot map the file ({exc})", subject=source.name) from None
    if arr.shape != tuple(shape) or arr.dtype != dtype or not isinstance(arr, np.memmap):
        raise DataError("the file changed while it was being read", subject=source.name)
    return arr


class FileRows:
    """Rows of an array stored C-ordered in a file, read into the caller's buffers, never through a memory map.

    A memory map reads a page when it is touched; if the file has shrunk
    under it by then (another program truncated or rewrote it), the touch is
    a SIGBUS, which no Python code can catch: the process dies without a
    word and its output's temporary file stays.  A read that comes back
    short is only a :class:`DataError`.  Rows along the first axis are
    contiguous bytes, so a band of them is one read.
    """

    def __init__(self, path: str, offset: int, dtype, shape, subject: str) -> None:
        import numpy as np

        self.dtype, self.shape, self.subject = np.dtype(dtype), tuple(shape), subject
        self._offset = int(offset)
        self._row = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self._staging = None  # the file's own sample type, where the caller's buffer holds another
        try:
            self._file = open(path, "rb", buffering=0)
        except OSError as exc:
            raise DataError(exc.strerror or str(exc), subject=subject) from None

    @classmethod
    def of_map(cls, arr, subject: str) -> "FileRows":
        """The rows of a read-only memory-mapped array (a streamed input), to be read without touching the map."""
        import numpy as np

        if not (isinstance(arr, np.memmap) and arr.flags.c_contiguous and arr.filename):
            raise ValueError("FileRows.of_map needs a C-ordered numpy.memmap of a file")
        return cls(arr.filename, arr.offset, arr.dtype, arr.shape, subject)

    def read(self, start: int, stop: int, out) -> None:
        """Fill ``out`` (C-ordered, ``stop - start`` rows of any sample type) with rows ``start..stop``."""
        import numpy as np

        if out.dtype == self.dtype and self.dtype.isnative:
            self._read_bytes(start, stop, out)
            return
        count = (stop - start) * self._row
        if self._staging is None or self._staging.nbytes < count:
            self._staging = np.empty(count, np.uint8)
        stored = self._staging[:count].view(self.dtype).reshape(out.shape)
        self._read_bytes(start, stop, stored)
        out[...] = stored

    def _read_bytes(self, start: int, stop: int, into) -> None:
        import os

        view = memoryview(into).cast("B")  # refuses a buffer that is not one contiguous run
        position, got = self._offset + start * self._row, 0
        try:
            # pread: no shared file position, so threads may read different rows at once.
            while got < len(view):
                n = os.preadv(self._file.fileno(), [view[got:]], position + got)
                if not n:
                    break
                got += n
        except OSError as exc:
            raise DataError(f"cannot read the file ({exc.strerror or exc})", subject=self.subject) from None
        if got < len(view):
            end = position + got
            raise DataError(f"the file shrank while it was read: it ends at byte {end:,}, and rows {start:,} to "
                            f"{stop - 1:,} need it to reach byte {position + len(view):,}", subject=self.subject)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "FileRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PageDropper:
    """Let go of the resident pages of a memory-mapped array's leading rows, as a streamed filter finishes them.

    Clean pages of the input and written pages of a shared output mapping
    both stay in the page cache (written ones are flushed by the kernel), so
    dropping them from this process loses nothing; it only keeps the
    resident memory to the rows in flight.
    """

    def __init__(self, arr) -> None:
        import mmap

        self._mmap = getattr(arr, "_mmap", None)
        ok = self._mmap is not None and arr.flags.c_contiguous and hasattr(self._mmap, "madvise")
        self._start = arr.offset % mmap.ALLOCATIONGRANULARITY if ok else 0
        self._row = arr.strides[0] if ok and arr.ndim else 0
        self._page = mmap.PAGESIZE
        self._done = 0  # bytes of the mapping already dropped
        self._advice = getattr(mmap, "MADV_DONTNEED", None)
        if self._advice is None:
            self._mmap = None

    def __call__(self, rows: int) -> None:
        """Drop the pages wholly inside the first ``rows`` rows."""
        if self._mmap is None or rows <= 0:
            return
        end = self._start + rows * self._row
        end -= end % self._page
        if end > self._done:
            try:
                self._mmap.madvise(self._advice, self._done, end - self._done)
            except (OSError, ValueError):
                self._mmap = None  # an advice is only an optimisation
                return
            self._done = end


def _reserve(path: str, size: int) -> None:
    """Allocate the output file's blocks now: a full disk is then an error here, not a SIGBUS mid-write."""
    import errno
    import os

    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        # A file system without fallocate: the sparse file open_memmap made will do.
    finally:
        os.close(fd)


def mapped_npy(dest: str, shape, dtype):
    """A context manager yielding a writable ``.npy`` array mapped from a temporary file beside ``dest``.

    The caller fills the array; when the block succeeds the file is flushed
    and renamed onto ``dest`` (atomically, like every output); on any
    failure the temporary file is removed and ``dest`` is left as it was.
    """
    import contextlib

    import numpy as np

    from .files import atomic_path

    @contextlib.contextmanager
    def opened():
        with atomic_path(dest) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
            try:
                _reserve(tmp, arr.offset + arr.nbytes)
                yield arr
                arr.flush()
            finally:
                del arr

    return opened()


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


def read_array_signal(source, fmt: str, *, limits: Limits, kind=None, key=None, auto_orient=True, stream=False):
    """Reader for ``.npy``/``.npz`` sources; with ``stream`` a ``.npy`` over the budget is mapped, not read."""
    if fmt == "npy":
        if key is not None:
            raise UsageError("--key selects an array inside a .npz archive; this input is a .npy", subject="--key")
        arr, mapped = read_npy(source, limits, stream=stream)
        sig = signal_from_array(arr, kind, source.name)
        if mapped:
            sig.streamed = True
    else:
        arr, key = read_npz(source, limits, key)
        sig = signal_from_array(arr, kind, source.name)
        sig.meta["key"] = key
    sig.meta["format"] = fmt
    sig.meta["dtype"] = str(arr.dtype)
    return sig


def write_array_signal(sig, dest: str, fmt: str, *, compress_level=None, range_mode: str = "clip", depth=None,
                       quality=None):
    """Writer for ``.npy``/``.npz``: float32 samples (float64 kept), whatever the input's type; or `depth`'s type."""
    import numpy as np

    from .files import atomic_path
    from .signal import Written

    data = np.asarray(sig.data)
    if data.dtype.kind not in "biuf":
        raise OutputError(f"cannot write samples of type {data.dtype}", subject=dest)
    out = data.astype(npy_output_dtype(data), copy=False)
    clipped = 0
    if depth is not None:
        from .samples import to_depth

        stored = np.dtype(sig.meta.get("dtype") or data.dtype)
        out, clipped = to_depth(data, stored if stored.kind in "iuf" else data.dtype, depth, range_mode)
    with atomic_path(dest) as tmp:
        if fmt == "npy":
            write_npy(tmp, out)
        else:
            key = sig.meta.get("key") or "arr_0"
            saver = np.savez if compress_level == 0 else np.savez_compressed
            with open(tmp, "wb") as fh:
                saver(fh, **{key: np.ascontiguousarray(out)})
    return Written(path=dest, format=fmt, clipped=clipped)
