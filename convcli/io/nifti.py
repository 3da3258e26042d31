"""NIfTI-1/2 volumes, ``.nii`` and ``.nii.gz``, through nibabel (an optional extra).

A volume keeps its header and affine; its voxel sizes become ``spacing`` in
millimetres.  The header is checked against the limits before nibabel reads
a voxel.  An uncompressed float volume over the memory budget can be mapped
instead of read, and a result written in place (:func:`map_nifti`,
:func:`mapped_nifti`).
"""
from __future__ import annotations

import contextlib
import struct

from ..errors import DataError, OutputError, UsageError

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
        (datatype,) = struct.unpack(order + "h", head[70:72])
        (vox_offset,) = struct.unpack(order + "f", head[108:112])
    elif sizeof_hdr == 540 and len(head) >= 540:
        (datatype,) = struct.unpack(order + "h", head[12:14])
        dims = struct.unpack(order + "8q", head[16:80])
        (vox_offset,) = struct.unpack(order + "q", head[168:176])
    else:
        raise DataError(f"not a NIfTI header (sizeof_hdr {sizeof_hdr})", subject=source.name)
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
            data = np.asanyarray(img.dataobj)
            data = np.array(data, dtype=data.dtype.newbyteorder("="), order="C", copy=True)
            header = img.header.copy()
            affine = np.array(img.affine, dtype=np.float64)
    except DataError:
        raise
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, ValueError, OSError,
            EOFError, zlib.error, gzip.BadGzipFile, TypeError, IndexError, struct.error, OverflowError) as exc:
        raise DataError(f"cannot read the NIfTI file: {str(exc) or type(exc).__name__}", subject=source.name) from None
    if data.dtype.kind not in "biuf":
        raise DataError(f"NIfTI samples of type {data.dtype} are not supported", subject=source.name)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 4:
        raise DataError(f"{data.ndim}-D NIfTI data of shape {data.shape} is not supported", subject=source.name)
    return _nifti_signal(data, header, affine, fmt)


def _nifti_signal(data, header, affine, fmt: str):
    """A Signal of NIfTI samples, with what the writer needs (header, affine, stored type) in ``meta``."""
    import numpy as np

    from .signal import Signal

    slope, inter = header.get_slope_inter()
    scaled = (slope is not None and slope != 1) or (inter is not None and inter != 0)
    meta = {"format": fmt, "nifti_header": header, "affine": affine, "nifti_version": 2 if header.sizeof_hdr == 540 else 1,
            "dtype": str(np.float32 if scaled and data.dtype.kind != "f" else data.dtype)}
    zooms = [float(z) for z in header.get_zooms()[: min(data.ndim, 3)]]
    to_mm = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}.get(header.get_xyzt_units()[0], 1.0)
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
            header = img.header.copy()
            affine = np.array(img.affine, dtype=np.float64)
            offset = int(img.dataobj.offset)
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, ValueError, OSError,
            EOFError, TypeError, IndexError, struct.error, OverflowError, AttributeError) as exc:
        raise DataError(f"cannot read the NIfTI file: {str(exc) or type(exc).__name__}", subject=source.name) from None
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    dtype = header.get_data_dtype()
    slope, inter = header.get_slope_inter()
    scaled = (slope is not None and slope != 1) or (inter is not None and inter != 0)
    if len(shape) != 3 or dtype.kind != "f" or scaled or dtype.byteorder == ">" or header.endianness != "<":
        raise DataError(refusal.message + why, subject=source.name)
    try:
        raw = np.memmap(source.path, dtype=dtype, mode="r", offset=offset, shape=shape[::-1])
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot map the file ({exc})", subject=source.name) from None
    sig = _nifti_signal(raw.T, header, affine, "nifti")
    sig.streamed = True
    return sig


def mapped_nifti(sig, dest: str, dtype):
    """A context manager yielding a writable ``(x, y, z)`` array mapped from a NIfTI temporary beside ``dest``.

    ``sig`` describes the result (shape, header, strided affine); its
    samples are not read.  The header is written first, the voxel blocks
    reserved, and the file renamed onto ``dest`` only when the block
    succeeds; any failure removes it.
    """
    import contextlib
    import io as _io

    import numpy as np

    from .arrays import _reserve
    from .files import atomic_path

    img = _nifti_image(sig, np.broadcast_to(np.zeros((), dtype=dtype), sig.data.shape))
    header = img.header
    header.set_data_dtype(np.dtype(dtype))
    probe = _io.BytesIO()
    header.write_to(probe)
    offset = -(-len(probe.getvalue()) // 16) * 16
    header.set_data_offset(offset)
    shape = tuple(sig.data.shape)

    @contextlib.contextmanager
    def opened():
        with atomic_path(dest, suffix=".nii") as tmp:
            with open(tmp, "wb") as fh:
                header.write_to(fh)
                fh.write(b"\0" * (offset - fh.tell()))
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
    """Writer for NIfTI: the input's header and (strided) affine kept, samples in the header's type."""
    import numpy as np

    from .files import atomic_path
    from .samples import to_samples
    from .signal import Written

    nib = _nibabel()
    data = np.asarray(sig.data)
    if sig.spatial_ndim not in (1, 2, 3):
        raise OutputError(f"a {sig.spatial_ndim}-D signal cannot be written as NIfTI", subject=dest)
    stored = np.dtype(sig.meta.get("dtype") or data.dtype)
    if stored.kind not in "iuf" or stored == np.float16:
        stored = np.dtype(np.float32)
    if stored.kind == "f" and data.dtype == np.float64:
        stored = np.dtype(np.float64)
    if depth is not None:
        samples, clipped = _to_depth(data, stored, depth, range_mode)
    else:
        samples, clipped = to_samples(data, stored, range_mode)
    img = _nifti_image(sig, samples)
    with atomic_path(dest, suffix=".nii.gz" if fmt == "nifti-gz" else ".nii") as tmp:
        nib.save(img, tmp)
    return Written(path=dest, format=fmt, clipped=clipped)


def _nifti_image(sig, samples):
    """The nibabel image of ``samples`` with ``sig``'s header and affine, voxel sizes matching the grid."""
    import numpy as np

    nib = _nibabel()
    header = sig.meta.get("nifti_header")
    affine = sig.meta.get("affine")
    if affine is None:
        affine = np.eye(4)
        if sig.spacing is not None:
            for axis, d in enumerate(sig.spacing[:3]):
                affine[axis, axis] = d
    cls = nib.Nifti2Image if sig.meta.get("nifti_version") == 2 else nib.Nifti1Image
    header = header.copy() if header is not None else None
    with _quiet_nibabel():
        img = cls(samples, np.asarray(affine, dtype=np.float64), header=header)
    img.header.set_data_dtype(samples.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_data_shape(samples.shape)
    # The constructor refreshes qform/sform from the affine; make the voxel
    # sizes (pixdim) agree with the new grid as well.
    zooms = list(img.header.get_zooms())
    cols = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    for axis in range(min(3, len(zooms))):
        zooms[axis] = float(cols[axis])
    img.header.set_zooms(zooms)
    img.set_sform(np.asarray(affine), code=int(header["sform_code"]) if header is not None and header["sform_code"] else 1)
    img.set_qform(np.asarray(affine), code=int(header["qform_code"]) if header is not None and header["qform_code"] else 1)
    return img


def _to_depth(data, stored, depth: str, range_mode: str):
    """Samples of ``--depth`` for NIfTI, which stores no bilevel type: depth 1 is kept as 0/255 uint8."""
    from .samples import to_depth

    return to_depth(data, stored, depth, range_mode)
