"""NIfTI-1/2 volumes, ``.nii`` and ``.nii.gz``, through nibabel (an optional extra).

A volume keeps its header field for field, as the file holds it: the writer
changes only what the result changes (the shape; under a stride, the voxel
sizes and the origins of both transforms), and stores scaled integers back in
their own type and scaling.  Voxel sizes become ``spacing`` in millimetres.
The header is checked against the limits, and a file that is no voxel grid
(CIFTI-2) refused, before nibabel reads a voxel.  An uncompressed float
volume over the memory budget can be mapped instead of read, and a result
written in place (:func:`map_nifti`, :func:`mapped_nifti`).
"""
from __future__ import annotations

import contextlib
import struct

from ..errors import DataError, FormatMismatch, OutputError, UsageError

NIFTI_HINT = 'NIfTI files need nibabel: pip install "convcli[nifti]"'

# NIfTI datatype code -> bytes per voxel (the codes nibabel reads).
_NIFTI_ITEMSIZE = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                   1536: 16, 1792: 16, 2048: 32, 2304: 4}


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise UsageError(NIFTI_HINT) from None
    return nibabel


@contextlib.contextmanager
def _quiet_nibabel():
    """Keep nibabel from logging header repairs (zero voxel sizes set to 1) to stderr.

    convcli speaks for itself, one line per problem.  The logger's level is
    raised rather than its handler removed: without a handler, Python's
    last-resort handler would print the same warnings.
    """
    import logging

    logger = logging.getLogger("nibabel.global")
    saved = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(saved)


def _nifti_header_bytes(source, gz: bool) -> bytes:
    if not gz:
        return source.head(540)
    import zlib

    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with source.open() as fh:
        out = b""
        while len(out) < 540:
            chunk = fh.read(4096)
            if not chunk:
                break
            try:
                out += d.decompress(chunk, 540 - len(out))
            except zlib.error as exc:
                raise DataError(f"corrupt gzip data ({exc})", subject=source.name) from None
    return out


def check_nifti_header(source, fmt: str, limits, *, budget: bool = True):
    """Refuse a NIfTI header whose dimensions, type or declared size are impossible, before nibabel reads it.

    Returns the declared shape and bytes per voxel; with ``budget`` false the
    memory budget is left for the caller to check.
    """
    gz = fmt == "nifti-gz"
    head = _nifti_header_bytes(source, gz)
    if len(head) < 348:
        raise DataError("truncated NIfTI header", subject=source.name)
    order = "<" if struct.unpack("<i", head[:4])[0] in (348, 540) else ">"
    (sizeof_hdr,) = struct.unpack(order + "i", head[:4])
    if sizeof_hdr == 348:
        dims = struct.unpack(order + "8h", head[40:56])
        (intent,) = struct.unpack(order + "h", head[68:70])
        (datatype,) = struct.unpack(order + "h", head[70:72])
        (vox_offset,) = struct.unpack(order + "f", head[108:112])
    elif sizeof_hdr == 540 and len(head) >= 540:
        (datatype,) = struct.unpack(order + "h", head[12:14])
        dims = struct.unpack(order + "8q", head[16:80])
        (vox_offset,) = struct.unpack(order + "q", head[168:176])
        (intent,) = struct.unpack(order + "i", head[504:508])
    else:
        raise DataError(f"not a NIfTI header (sizeof_hdr {sizeof_hdr})", subject=source.name)
    what = _what_it_is(intent)
    if what is not None:
        raise DataError(f"{what} (NIfTI intent code {intent}), not a volume: its samples are not a grid of voxels",
                        subject=source.name)
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise DataError(f"impossible NIfTI dimension count {ndim} (must be 1..7)", subject=source.name)
    shape = dims[1:1 + ndim]
    if any(n <= 0 for n in shape):
        raise DataError(f"impossible NIfTI shape {tuple(shape)}", subject=source.name)
    if datatype not in _NIFTI_ITEMSIZE:
        raise DataError(f"unknown NIfTI datatype code {datatype}", subject=source.name)
    if datatype in (32, 1536, 1792, 2048, 128, 2304, 1):
        raise DataError(f"NIfTI datatype code {datatype} (complex, RGB or bit) is not supported", subject=source.name)
    itemsize = _NIFTI_ITEMSIZE[datatype]
    count = 1
    for n in shape:
        count *= n
    nbytes = count * itemsize
    if not gz:
        if not (vox_offset >= 0) or vox_offset > source.size:
            raise DataError(f"NIfTI data offset {vox_offset:g} lies past the end of the file", subject=source.name)
        if nbytes > source.size - int(vox_offset):
            raise DataError(
                f"truncated: the header declares {nbytes:,} bytes of voxels but the file holds "
                f"{max(source.size - int(vox_offset), 0):,}",
                subject=source.name,
            )
    else:
        limits.check_inflation(nbytes, source.size, source.name)
    if budget:
        limits.check_samples(shape, itemsize, source.name, work_itemsize=8 if itemsize >= 8 else 4)
    return tuple(shape), itemsize


def read_nifti(source, fmt: str, *, limits, kind=None, key=None, auto_orient=True, stream=False):
    """Reader for NIfTI-1/2 volumes (``.nii``, ``.nii.gz``): samples, header and affine.

    With ``stream``, an uncompressed float volume over the memory budget is
    memory-mapped instead of refused (see :func:`map_nifti`).
    """
    import gzip
    import zlib

    import numpy as np

    if kind not in (None, "volume"):
        raise UsageError(f"a NIfTI file cannot be read as {kind}", subject="--kind")
    shape, itemsize = check_nifti_header(source, fmt, limits, budget=False)
    try:
        limits.check_samples(shape, itemsize, source.name, work_itemsize=8 if itemsize >= 8 else 4)
    except DataError as refusal:
        if not (stream and fmt == "nifti" and source.path is not None):
            raise
        return map_nifti(source, refusal)
    nib = _nibabel()
    suffix = ".nii.gz" if fmt == "nifti-gz" else ".nii"
    try:
        with source.as_path(suffix) as path, _quiet_nibabel():
            img = nib.load(path)
            _refuse_non_volume(img, source.name)
            header = _file_header(path, type(img.header))
            stored = np.asanyarray(img.dataobj.get_unscaled())
            stored = np.array(stored, dtype=stored.dtype.newbyteorder("="), order="C", copy=True)
            slope, inter = _scaling(header)
    except DataError:
        raise
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, ValueError, OSError,
            EOFError, zlib.error, gzip.BadGzipFile, TypeError, IndexError, struct.error, OverflowError) as exc:
        raise DataError(f"cannot read the NIfTI file: {str(exc) or type(exc).__name__}", subject=source.name) from None
    if stored.dtype.kind not in "biuf":
        raise DataError(f"NIfTI samples of type {stored.dtype} are not supported", subject=source.name)
    data = _scaled(stored, slope, inter)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 4:
        raise DataError(f"{data.ndim}-D NIfTI data of shape {data.shape} is not supported", subject=source.name)
    return _nifti_signal(data, header, fmt)


def _refuse_non_volume(img, subject: str) -> None:
    """Refuse what nibabel reads from a NIfTI file as something other than a volume (a CIFTI-2 matrix)."""
    nib = _nibabel()
    if not isinstance(img, nib.Nifti1Pair) or isinstance(img, nib.Cifti2Image):
        raise DataError(f"holds a {type(img).__name__}, not a NIfTI volume", subject=subject)


# NIfTI intent codes of files that are not a grid of voxels (nifti1.h and the CIFTI-2 standard).
NOT_VOLUMES = {
    1008: "a NIfTI point set", 1009: "a NIfTI triangle list",
    3000: "a CIFTI-2 file", 3001: "a CIFTI-2 dense connectivity file (.dconn)",
    3002: "a CIFTI-2 dense data series (.dtseries)", 3003: "a CIFTI-2 parcellated connectivity file (.pconn)",
    3004: "a CIFTI-2 parcellated data series (.ptseries)", 3006: "a CIFTI-2 dense scalar file (.dscalar)",
    3007: "a CIFTI-2 dense label file (.dlabel)", 3008: "a CIFTI-2 parcellated scalar file (.pscalar)",
    3009: "a CIFTI-2 parcellated-dense connectivity file (.pdconn)",
    3010: "a CIFTI-2 dense-parcellated connectivity file (.dpconn)",
    3011: "a CIFTI-2 parcellated connectivity series (.pconnseries)",
    3012: "a CIFTI-2 parcellated connectivity scalar file (.pconnscalar)",
}


def _what_it_is(intent: int) -> str | None:
    """What a NIfTI file whose intent says it holds no volume holds; None for a volume."""
    if intent in NOT_VOLUMES:
        return NOT_VOLUMES[intent]
    if 3000 <= intent < 3100:  # the range NIfTI reserves for CIFTI
        return "a CIFTI-2 file"
    return None


def _file_header(path: str, klass):
    """The header exactly as the file holds it, extensions included.

    nibabel's loader repairs what it finds odd (a qfac of 0, zero voxel
    sizes) in the header it returns; the writer must put back the file's
    own fields, so they are read again without the repairs.
    """
    nib = _nibabel()
    with nib.openers.ImageOpener(path) as fh:
        return klass.from_fileobj(fh, check=False)


def _checked(header):
    """``header`` with nibabel's repairs, as its loader reads it: the one to compute affines and voxel sizes from."""
    with _quiet_nibabel():
        return type(header)(header.binaryblock, header.endianness, check=True)


def _scaling(header):
    """The header's (slope, intercept), or (None, None) where it leaves the samples unscaled."""
    slope, inter = _checked(header).get_slope_inter()
    if slope is None or (slope == 1 and (inter is None or inter == 0)):
        return None, None
    return float(slope), float(inter or 0.0)


def _scaled(stored, slope, inter):
    """Stored samples times slope plus intercept, in a float type that keeps every stored value apart.

    float32 where the stored integers and the intercept (in steps of the
    slope) fit in 22 bits, so that undoing the scaling on writing recovers
    each integer to within a quarter step; float64 otherwise.
    """
    import numpy as np

    if slope is None:
        return stored
    work = np.float64
    if stored.dtype.kind in "iub" and stored.dtype.itemsize <= 2 and abs(inter / slope) < (1 << 22) - (1 << 16):
        work = np.float32
    elif stored.dtype == np.float32:
        work = np.float32
    values = stored.astype(work)
    values *= work(slope)
    values += work(inter)
    return values


def _nifti_signal(data, header, fmt: str):
    """A Signal of NIfTI samples, with what the writer needs (the file's header, the affine) in ``meta``."""
    import numpy as np

    from .signal import Signal

    checked = _checked(header)
    meta = {"format": fmt, "nifti_header": header, "affine": np.array(checked.get_best_affine(), dtype=np.float64),
            "dtype": str(data.dtype)}
    zooms = [float(z) for z in checked.get_zooms()[: min(data.ndim, 3)]]
    to_mm = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}.get(checked.get_xyzt_units()[0], 1.0)
    spacing = tuple(z * to_mm for z in zooms)
    if not all(np.isfinite(d) and d > 0 for d in spacing):
        meta["spacing_invalid"] = spacing
        spacing = None
    spatial = min(data.ndim, 3)
    sig_kind = {1: "signal", 2: "image", 3: "volume"}[spatial]
    return Signal(data=data, kind=sig_kind, channel_axis=-1 if data.ndim == 4 else None,
                  spacing=spacing, meta=meta)


def map_nifti(source, refusal: DataError):
    """Memory-map an uncompressed NIfTI volume over the memory budget, read-only, for a streamed filter.

    Only an unscaled little-endian float 3-D volume qualifies (its filtered
    result is stored as it is computed, with no integer conversion).  NIfTI
    keeps x fastest, so the samples are mapped as a C-ordered (z, y, x) array
    and the Signal holds its transpose, an (x, y, z) view.
    """
    import numpy as np

    nib = _nibabel()
    why = "; only an unscaled little-endian float 3-D NIfTI volume can be streamed"
    try:
        with _quiet_nibabel():
            img = nib.load(source.path, mmap=False)  # the header; the proxy reads nothing yet
            _refuse_non_volume(img, source.name)
            header = _file_header(source.path, type(img.header))
            offset = int(img.dataobj.offset)
    except DataError:
        raise
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, ValueError, OSError,
            EOFError, TypeError, IndexError, struct.error, OverflowError, AttributeError) as exc:
        raise DataError(f"cannot read the NIfTI file: {str(exc) or type(exc).__name__}", subject=source.name) from None
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    dtype = header.get_data_dtype()
    if len(shape) != 3 or dtype.kind != "f" or _scaling(header)[0] is not None or header.endianness != "<":
        raise DataError(refusal.message + why, subject=source.name)
    try:
        raw = np.memmap(source.path, dtype=dtype, mode="r", offset=offset, shape=shape[::-1])
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot map the file ({exc})", subject=source.name) from None
    sig = _nifti_signal(raw.T, header, "nifti")
    sig.streamed = True
    return sig


def mapped_nifti(sig, dest: str, dtype):
    """A context manager yielding a writable ``(x, y, z)`` array mapped from a NIfTI temporary beside ``dest``.

    ``sig`` describes the result (shape, header, strided affine); its
    samples are not read.  The header is written first, the voxel blocks
    reserved, and the file renamed onto ``dest`` only when the block
    succeeds; any failure removes it.
    """
    import numpy as np

    from .arrays import _reserve
    from .files import atomic_path

    shape = tuple(sig.data.shape)
    header = output_header(sig, _nifti_shape(sig, shape), np.dtype(dtype).newbyteorder("<"), dest)

    @contextlib.contextmanager
    def opened():
        with atomic_path(dest, suffix=".nii") as tmp:
            with open(tmp, "wb") as fh:
                offset = _write_header(fh, header)
            _reserve(tmp, offset + int(np.prod(shape)) * np.dtype(dtype).itemsize)
            arr = np.memmap(tmp, dtype=np.dtype(dtype), mode="r+", offset=offset, shape=shape, order="F")
            try:
                yield arr
                arr.flush()
            finally:
                del arr

    return opened()


def write_nifti(sig, dest: str, fmt: str, *, compress_level=None, range_mode: str = "clip", depth=None,
                quality=None):
    """Writer for NIfTI: the input's header kept field for field, its sample type and scaling too.

    Only what the result changes is updated: the shape, and under a stride
    the voxel sizes and the origins of the qform and sform.  Samples of a
    scaled input are stored as it stored them, ``(value - inter) / slope``
    in its integer type.  A signal with channels (stereo audio, an RGB
    image) keeps them along the fourth dimension, as the reader takes it.
    ``depth`` (``--depth``) stores the values themselves in that type
    instead, unscaled.
    """
    import numpy as np

    from .files import atomic_path
    from .samples import to_samples
    from .signal import Written

    _nibabel()
    if sig.frames:
        raise FormatMismatch("frames of an animation cannot be written as NIfTI; use .npy", subject=dest)
    if sig.spatial_ndim not in (1, 2, 3):
        raise FormatMismatch(f"a {sig.spatial_ndim}-D signal cannot be written as NIfTI", subject=dest)
    data = np.asarray(sig.data)
    notes: list[str] = []
    stored, slope, inter = stored_type(sig, data)
    if depth is not None:
        from .samples import depth_type, to_depth

        target = depth_type(depth, stored)[0]
        if slope is not None:
            notes.append(f"--depth {depth}: the values are stored as {target}, without the input's scl_slope/scl_inter")
        header = output_header(sig, _nifti_shape(sig, data.shape), target, dest)
        header.set_slope_inter(1.0, 0.0)
        samples, clipped = to_depth(data, target if slope is not None else stored, depth, range_mode)
    else:
        header = output_header(sig, _nifti_shape(sig, data.shape), stored, dest)
        if slope is not None:
            data = (data.astype(np.float64) - inter) / slope
        samples, clipped = to_samples(data, stored.newbyteorder("="), range_mode)
    samples = samples.reshape(_nifti_shape(sig, data.shape))
    gz = fmt == "nifti-gz"
    with atomic_path(dest, suffix=".nii.gz" if gz else ".nii") as tmp:
        with _output_file(tmp, gz, compress_level) as fh:
            offset = _write_header(fh, header)
            _write_voxels(fh, samples, header.get_data_dtype())
    return Written(path=dest, format=fmt, clipped=clipped, notes=notes)


def stored_type(sig, data):
    """The sample type written and the scaling undone on writing: ``(dtype, slope, inter)``, slope None if unscaled.

    A NIfTI input's own (its header's type and scl_slope/scl_inter); else
    the type the signal was read with (bool as uint8; float16, and what
    NIfTI cannot hold, as float32; a float64 result as float64).
    """
    import numpy as np

    header = sig.meta.get("nifti_header")
    if header is not None:
        slope, inter = _scaling(header)
        return header.get_data_dtype().newbyteorder("="), slope, inter
    dtype = np.dtype(sig.meta.get("dtype") or data.dtype)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    elif dtype.kind not in "iuf" or dtype == np.float16:
        dtype = np.dtype(np.float32)
    if dtype.kind == "f" and data.dtype == np.float64:
        dtype = np.dtype(np.float64)
    return dtype, None, None


def _nifti_shape(sig, shape) -> tuple[int, ...]:
    """The NIfTI dimensions of samples of `shape`: channels fourth, and the input's trailing 1s put back."""
    shape = tuple(int(n) for n in shape)
    if sig.channel_axis is not None and sig.spatial_ndim < 3:
        shape = shape[:-1] + (1,) * (3 - sig.spatial_ndim) + shape[-1:]
    header = sig.meta.get("nifti_header")
    if header is not None:
        declared = tuple(int(n) for n in header.get_data_shape())
        if len(declared) > len(shape) and all(n == 1 for n in declared[len(shape):]):
            shape += declared[len(shape):]
    return shape


def output_header(sig, shape, dtype, dest: str):
    """The header of the output: the input's, every field kept, updated for the new shape, type and grid.

    An input that was not NIfTI gets a fresh header whose affine has the
    signal's voxel spacing (NIfTI-2 where a dimension is too long for
    NIfTI-1's 16-bit sizes).
    """
    import numpy as np

    nib = _nibabel()
    header = sig.meta.get("nifti_header")
    if header is None:
        header = _fresh_header(sig, shape)
    else:
        header = header.copy()
        _restride(header, sig.meta.get("affine"))
    limit = np.iinfo(header["dim"].dtype).max
    if len(shape) > 7 or max(shape) > limit:
        raise OutputError(f"shape {shape} does not fit a {type(header).__name__[:6]} header (at most 7 dimensions "
                          f"of {limit:,}); use .npy", subject=dest)
    # Not set_data_shape: it also resets pixdim beyond the shape (a 4-D
    # input's repetition time, say) to 1.
    dims = header["dim"]
    dims[0] = len(shape)
    dims[1:len(shape) + 1] = shape
    header["dim"] = dims
    header.set_data_dtype(np.dtype(dtype))
    header["magic"] = b"n+2" if isinstance(header, nib.Nifti2Header) else b"n+1"
    return header


def _fresh_header(sig, shape):
    """A header for samples that come from no NIfTI file: their voxel spacing in millimetres, or 1."""
    import numpy as np

    nib = _nibabel()
    cls = nib.Nifti2Header if max(shape) > np.iinfo(np.int16).max else nib.Nifti1Header
    header = cls()
    affine = np.eye(4)
    if sig.spacing is not None:
        for axis, d in enumerate(sig.spacing[:3]):
            affine[axis, axis] = d
        header.set_xyzt_units("mm")
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    return header


def _restride(header, affine) -> None:
    """Update the voxel sizes and transforms of `header` to the output grid whose voxel-to-world affine is `affine`.

    The output grid is the input's taken every ``stride`` voxels from an
    origin; the qform and sform are each moved by that same step, so each
    keeps its own values (they may differ) and its code, and the quaternion
    is untouched.  Where the affine is unchanged, nothing is.
    """
    import numpy as np

    if affine is None:
        return
    checked = _checked(header)
    before = np.asarray(checked.get_best_affine(), dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    if np.array_equal(before, affine):
        return
    step = _grid_step(before, affine)
    if step is None:  # not a stride of the input's grid: describe the new one as it is
        if header["sform_code"]:
            header.set_sform(affine)
        if header["qform_code"]:
            header.set_qform(affine)
        return
    pixdim = header["pixdim"]
    pixdim[1:4] = pixdim[1:4] * np.diag(step)[:3]
    header["pixdim"] = pixdim
    if header["qform_code"]:
        moved = checked.get_qform() @ step
        header["qoffset_x"], header["qoffset_y"], header["qoffset_z"] = moved[:3, 3]
    if header["sform_code"]:
        moved = checked.get_sform() @ step
        header["srow_x"], header["srow_y"], header["srow_z"] = moved[0], moved[1], moved[2]


def _grid_step(before, after):
    """The matrix ``[[diag(strides), origin], [0, 1]]`` with ``after = before @ step``, or None if there is none."""
    import numpy as np

    try:
        step = np.linalg.solve(before, after)
    except np.linalg.LinAlgError:
        return None
    strides = np.rint(np.diag(step)[:3])
    clean = np.eye(4)
    clean[:3, :3] = np.diag(strides)
    clean[:3, 3] = step[:3, 3]
    if np.any(strides < 1) or not np.allclose(step, clean, rtol=0, atol=1e-6):
        return None
    return clean


def _write_header(fh, header) -> int:
    """Write `header` and its extensions, pad to its data offset, and return that offset.

    The input's offset is kept where the extensions fit before it (a few
    tools leave room there); otherwise the smallest one, on 16 bytes.
    """
    smallest = header.single_vox_offset + header.extensions.get_sizeondisk()
    if not smallest <= int(header["vox_offset"]) <= smallest + (1 << 20):
        header["vox_offset"] = 0  # write_to then puts the smallest
    header.write_to(fh)
    offset = int(header["vox_offset"])
    fh.write(b"\0" * (offset - fh.tell()))
    return offset


def _write_voxels(fh, samples, disk_dtype) -> None:
    """Write `samples` as NIfTI stores them (x fastest, the header's byte order), one plane of the last axis at a time.

    Writing plane by plane keeps the extra memory to one plane, where
    ``tobytes(order="F")`` would copy the whole volume.
    """
    import numpy as np

    if samples.ndim == 1:
        fh.write(np.asarray(samples, dtype=disk_dtype).tobytes())
        return
    trailing = samples.shape[2:]
    for index in np.ndindex(*trailing[::-1]):  # the third axis fastest, then the fourth, ...
        plane = samples[(slice(None), slice(None)) + index[::-1]]
        fh.write(np.ascontiguousarray(plane.T, dtype=disk_dtype).tobytes())


@contextlib.contextmanager
def _output_file(path: str, gz: bool, level):
    """The temporary output opened for writing: gzip-compressed for ``.nii.gz`` (level 1 by default, as nibabel)."""
    import gzip

    if not gz:
        with open(path, "wb") as fh:
            yield fh
        return
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1 if level is None else level,
                                                mtime=0) as fh:
        yield fh
