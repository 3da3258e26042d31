"""Tiled and striped (Big)TIFF / OME-TIFF read tile by tile, and tiled BigTIFF written tile by tile.

Reading: series 0 of the file, level 0 of its pyramid, is opened as a Zarr
array over its own tiles or strips (tifffile's store, ``TiffFile.aszarr``):
a chunked run decodes only the tiles its chunks reach, several at once.
Its axes take convcli's roles (rows and columns, pages or ``Z`` as slices,
samples or ``C`` as channels, ``T`` as time points); the OME-XML physical
sizes, or else the resolution tags, give the pixel spacing so that
physical-unit kernels work.  Samples are read as stored: a palette, a
min-is-white or a bilevel page is refused here (the in-memory reader
converts them).

Writing: :func:`write_tiles` writes a tiled BigTIFF from bands of rows, each
cut into tiles as it comes, so that the file never has to be whole in
memory.  The layout is the input TIFF's (compression, photometric, planar
configuration, tiles, tags, resolution scaled by the stride), through the
in-memory writer's own rules (:mod:`.tiff`); from another input it is
Deflate-compressed tiles of 256 x 256 with a predictor, and the physical
pixel size as OME-XML and resolution tags.
"""
from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field

from ..errors import DataError
from .zarr import LENGTH_UNITS, ZarrImage

SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
TILE = (256, 256)  # the tile of a TIFF written from an input that was not a tiled TIFF
# OME-XML length units (the symbols of its UnitsLength), in millimetres.
OME_UNITS = {"nm": 1e-6, "µm": 1e-3, "um": 1e-3, "\u03bcm": 1e-3, "mm": 1.0, "cm": 10.0, "m": 1000.0,
             "Å": 1e-7, "pm": 1e-9}
# How a stored chunk (tile or strip) may weigh against the memory budget: a task decodes several.
STORED_SHARE = 16
# The decoded tiles kept for the next chunks: this share of the budget, at most MAX_CACHE bytes.
CACHE_SHARE = 8
MAX_CACHE = 256 << 20


def names_tiff(path: str | None) -> bool:
    """Whether an output name asks for a TIFF."""
    return bool(path) and str(path).lower().endswith(SUFFIXES)


def is_tiff(path: str) -> bool:
    """Whether ``path`` is a regular file that starts as a TIFF or BigTIFF does."""
    if not path or path == "-" or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in MAGIC
    except OSError:
        return False


def read_in_chunks(path: str, dest: str, memory_budget, max_pixels=None) -> bool:
    """Whether ``path`` is a TIFF to read chunk by chunk: over the budgets of memory or pixels, or written to Zarr.

    A page over ``--max-pixels`` is read in chunks rather than refused: the
    pixel limit guards memory, which chunks bound (a file that inflates
    suspiciously is still refused, :func:`open_tiff`).
    """
    from .zarr import names_zarr

    return is_tiff(path) and (names_zarr(dest) or over_budget(path, memory_budget, max_pixels))


def over_budget(path: str, memory_budget, max_pixels=None) -> bool:
    """Whether ``path`` is a TIFF whose series 0 cannot be read and filtered whole within the budgets.

    Cheap: only the header and the first directories are read.  A file
    tifffile cannot open is not over the budget (the in-memory reader then
    says what is wrong with it).
    """
    if not is_tiff(path):
        return False
    from ..errors import ConvcliError
    from .limits import Limits

    limits = Limits(max_pixels=max_pixels, memory_budget=memory_budget)
    try:
        import tifffile
    except ImportError:
        return False
    from .tiff import tiff_errors

    try:
        with tiff_errors(path), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.keyframe
            return (page.imagewidth * page.imagelength > limits.max_pixels
                    or not limits.fits_samples(series.shape, series.dtype.itemsize))
    except ConvcliError:
        return False


class TiffImage(ZarrImage):
    """Series 0, level 0 of a TIFF as a Zarr array, and what is needed to write a TIFF like it.

    ``meta`` is what the in-memory reader would give (:func:`.tiff._meta`):
    the first page's layout, its tags, resolution and ICC profile.  A Zarr
    output from it is written as Zarr format 3 with Zarr's default
    compressor, as an OME-Zarr image where the TIFF states a pixel size.
    """

    meta: dict
    ome: bool

    @property
    def zarr_format(self) -> int:
        return 3

    @property
    def compressors(self):
        return "auto"

    @property
    def filters(self):
        return None


def open_tiff(path: str, *, memory_budget=None) -> TiffImage:
    """Open a TIFF's series 0, level 0 chunk by chunk, after checking its header against the budget."""
    from . import zarr as zarr_io
    from .limits import Limits, human
    from .tiff import PageSpec, _Bytes, _meta, page_offsets, tiff_errors

    import tifffile

    limits = Limits(memory_budget=memory_budget)
    fh = open(path, "rb")
    try:
        size = os.fstat(fh.fileno()).st_size
        with tiff_errors(path):
            page_offsets(_Bytes(fh.fileno(), size, path), path)  # loop-proof and bounded, before tifffile walks
            tif = tifffile.TiffFile(fh)
            series = tif.series[0]
            level = series.levels[0]
            page = level.keyframe
            spec = PageSpec.of(page, path)
            _refuse_conversions(page, path)
            _check_segments(level, size, path)
            declared = int(level.size) * level.dtype.itemsize
            limits.check_inflation(declared, size, path)
            stored = int(_prod(page.chunks)) * level.dtype.itemsize
            if stored * STORED_SHARE > limits.memory_budget:
                raise DataError(f"its {'tiles' if page.is_tiled else 'strips'} of {human(stored)} each are too "
                                f"large to read in chunks within the memory budget of {human(limits.memory_budget)} "
                                "(raise --memory-budget)", subject=path)
            from ..parallel import thread_count

            zarr = zarr_io.require("a TIFF over the memory budget", path)  # after the checks: a bomb costs no Dask
            store = _Store(series, maxworkers=max(2, thread_count()), subject=path,
                           cache=min(limits.memory_budget // CACHE_SHARE, MAX_CACHE))
            array = zarr.open_array(store, mode="r")
            meta = _meta(tif, [page], spec, None, fh)
            axes = _roles(level.get_axes(True), path)
            image = TiffImage(array, axes, None)
            image.meta, image.ome = meta, bool(tif.is_ome)
            image.spacing = _spacing(tif, image, meta, path)
            image.attrs = _ome_zarr_attrs(image)
            more = len(tif.series) - 1
            image.levels = len(series.levels)
            if more:
                image.notes.append(f"only series 0 of the TIFF's {more + 1} series was filtered and written")
    except BaseException:
        fh.close()
        raise
    weakref.finalize(image, _close, tif, fh)
    return image


def _close(tif, fh) -> None:
    tif.close()
    fh.close()


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _Store(series, *, maxworkers: int, subject: str, cache: int):
    """tifffile's Zarr store over the tiles of ``series``'s level 0: decoding errors are one DataError naming
    the file, and the last ``cache`` bytes of decoded tiles are kept.

    The chunk plan reads one channel at a time, and a band's chunks reach
    into their neighbours' tiles: without the cache each tile of an RGB
    image would be decoded about six times.
    """
    import collections
    import threading

    from tifffile.zarr import ZarrTiffStore

    from .tiff import decode_errors

    class Store(ZarrTiffStore):
        async def get(self, key, prototype, byte_range=None):
            with self._lock:
                if key in self._kept:
                    self._kept.move_to_end(key)
                    return self._kept[key]
            # Not tiff_errors: its hold on tifffile's logger is not for tasks decoding on several threads.
            with decode_errors(subject, f"the TIFF's tile {key}", "a tile"):
                value = await super().get(key, prototype, byte_range)
            if value is not None and byte_range is None and not key.endswith((".zarray", ".zattrs", ".zgroup")):
                self._keep(key, value)
            return value

        def _keep(self, key, value) -> None:
            size = len(value)
            with self._lock:
                self._kept[key] = value
                self._kept_bytes += size
                while self._kept_bytes > cache and self._kept:
                    _, old = self._kept.popitem(last=False)
                    self._kept_bytes -= len(old)

    store = Store(series, level=0, maxworkers=maxworkers, squeeze=True)
    store._kept, store._kept_bytes, store._lock = collections.OrderedDict(), 0, threading.Lock()
    return store


def _refuse_conversions(page, path: str) -> None:
    """Pages whose samples the in-memory reader converts (palette, min-is-white, bilevel): not read in chunks."""
    from .tiff import MINISWHITE, PALETTE

    photometric = int(page.photometric)
    what = ("a palette" if photometric == PALETTE else "a min-is-white" if photometric == MINISWHITE
            else "a bilevel" if page.bitspersample == 1 else None)
    if what:
        raise DataError(f"{what} TIFF is converted as it is read, which convcli does in memory only; it is over "
                        "the memory budget (raise --memory-budget)", subject=path)


def _check_segments(level, size: int, path: str) -> None:
    """Refuse tiles or strips that run past the end of the file (a file cut short)."""
    for index, page in enumerate(level.pages):
        if page is None:
            continue
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            if count and offset + count > size:
                raise DataError(f"truncated TIFF (page {index + 1}'s samples run past the end of the file)",
                                subject=path)


def _roles(axes: str, path: str) -> tuple[str, ...]:
    """tifffile's axis letters as ZarrImage roles: ``s`` spatial, ``c`` channels, ``t`` time points."""
    roles = []
    for letter in axes:
        if letter in "YX":
            roles.append("s")
        elif letter in "SC":
            roles.append("c")
        elif letter == "T":
            roles.append("t")
        elif letter in "ZQI":
            roles.append("s")  # slices; pages of a plain TIFF are a volume, as in memory
        else:
            raise DataError(f"unsupported TIFF axes {axes} for reading in chunks (axis {letter})", subject=path)
    if roles.count("c") > 1 or roles.count("t") > 1 or roles.count("s") > 3:
        raise DataError(f"unsupported TIFF axes {axes} for reading in chunks: at most one channel, one time "
                        "and three space axes", subject=path)
    return tuple(roles)


def _spacing(tif, image: TiffImage, meta: dict, path: str):
    """Millimetres per sample along the spatial axes: OME-XML physical sizes, else the resolution tags."""
    from .tiff import tiff_spacing

    nd = len(image.spatial)
    if tif.is_ome:
        sizes = _ome_sizes(tif.ome_metadata, path)
        if sizes is not None:
            y, x, z = sizes
            found = (z, y, x)[3 - nd:]
            return None if any(v is None for v in found) else tuple(found)
    return tiff_spacing(meta, nd) if nd in (2, 3) else None


def _ome_sizes(xml: str | None, path: str):
    """(y, x, z) in millimetres from the first Pixels element of OME-XML (None where it states none)."""
    if not xml:
        return None
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for axis in ("Y", "X", "Z"):
        value = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if value is None:
            sizes.append(None)
            continue
        if unit not in OME_UNITS:
            raise DataError(f"OME-XML PhysicalSize{axis}Unit {unit!r} is not a length convcli knows "
                            f"({', '.join(OME_UNITS)})", subject=path)
        try:
            number = float(value)
        except ValueError:
            raise DataError(f"OME-XML PhysicalSize{axis} {value!r} is not a number", subject=path) from None
        sizes.append(number * OME_UNITS[unit] if number > 0 else None)
    return tuple(sizes)


def _ome_zarr_attrs(image: TiffImage) -> dict:
    """OME-Zarr (NGFF 0.5) metadata for a Zarr output, where the TIFF states a pixel size; else none."""
    if image.spacing is None:
        return {}
    names = {"t": "t", "c": "c"}
    spatial_names = iter(("z", "y", "x")[3 - len(image.spatial):])
    axes, scale = [], []
    spacing = iter(image.spacing)
    for role in image.axes:
        if role == "s":
            axes.append({"name": next(spatial_names), "type": "space", "unit": "micrometer"})
            scale.append(next(spacing) / LENGTH_UNITS["micrometer"])
        else:
            axes.append({"name": names[role], "type": {"t": "time", "c": "channel"}[role]})
            scale.append(1.0)
    dataset = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
    return {"ome": {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [dataset]}]}}


# ---- writing -------------------------------------------------------------------------------


@dataclass
class TiledLayout:
    """How a tiled BigTIFF is written: tifffile's shape and the arguments of ``TiffWriter.write``.

    ``shape`` is in the file's order: slices (pages), then the planes of
    separate channels, rows, columns, then contiguous channels.  ``planes``
    counts the (page, plane) pairs, each ``rows`` high, that bands fill in turn.
    """

    shape: tuple[int, ...]
    dtype: object
    tile: tuple[int, int]
    arguments: dict
    byteorder: str
    ome: bool
    planar: bool
    rows: int
    planes: int
    samples: int  # channels in a tile: 1 when they are separate planes
    notes: list[str] = field(default_factory=list)


def tiled_layout(image: ZarrImage, shape, dtype, strides, *, compress_level=None, quality=None) -> TiledLayout:
    """The layout of a tiled BigTIFF holding a result of ``shape`` ([slices,] rows, columns[, channels]).

    Like the input TIFF where ``image`` is one (its compression, photometric,
    planar configuration, tiles and tags, through :mod:`.tiff`'s rules), else
    Deflate tiles of :data:`TILE`; the resolution and pixel size are the
    input's multiplied by ``strides`` (one per spatial axis).
    """
    import numpy as np

    from .grid import restride
    from .signal import Signal
    from .tiff import ADOBE_DEFLATE, _baseline, _layouts, _page_arguments

    dtype = np.dtype(dtype)
    nd = len(image.spatial)
    channels = shape[-1] if len(shape) > nd else 1
    pages = shape[0] if nd == 3 else 1
    notes: list[str] = []
    from_tiff = isinstance(image, TiffImage)
    meta = dict(image.meta) if from_tiff else {"format": "zarr", "dtype": dtype.name}
    if not from_tiff and image.spacing is not None and nd >= 2:
        meta["resolution"] = (_per_cm(image.spacing[-1]), _per_cm(image.spacing[-2]), 3)
    probe = np.zeros((1,) * nd + ((channels,) if channels > 1 else ()), dtype)
    sig = Signal(probe, kind="volume" if nd == 3 else "image", channel_axis=-1 if channels > 1 else None,
                 spacing=image.spacing, meta=meta)
    restride(sig, tuple(strides))
    ome = (image.ome if from_tiff else False) or (not from_tiff and sig.spacing is not None)
    if from_tiff:
        layout = _layouts(sig, (pages,) + tuple(shape[nd - 2:nd]) + (channels,), notes)[0]
    else:
        layout = dict(_baseline(sig, channels, pages), compression=ADOBE_DEFLATE, predictor=2)
        del layout["baseline"]  # the baseline writes uncompressed strips; these are Deflate tiles
    if ome:
        layout = dict(layout, tags=[t for t in layout["tags"] if t[0] != 270])  # OME-XML describes it instead
    page, arguments = _page_arguments(np.zeros((1, 1, channels), dtype), layout, sig, dtype, None, False,
                                      compress_level, quality, notes)
    arguments.pop("rowsperstrip", None)
    tile = tuple(layout["tile"]) if layout["tile"] is not None else TILE
    arguments["tile"] = tile
    planar = channels > 1 and arguments.get("planarconfig") == 2
    rows, columns = shape[nd - 2], shape[nd - 1]
    file_shape = ((pages,) if nd == 3 else ()) + ((channels,) if planar else ()) + (rows, columns) + (
        (channels,) if channels > 1 and not planar else ())
    if ome:
        arguments["metadata"] = _ome_metadata(sig, nd, channels, planar)
    byteorder = (meta.get("tiff") or {}).get("byteorder", "<")
    return TiledLayout(file_shape, dtype, tile, arguments, byteorder, ome, planar, rows,
                       pages * (channels if planar else 1), 1 if planar else channels, notes)


def _per_cm(mm: float) -> tuple[int, int]:
    """Pixels per centimetre as a TIFF rational, for a pixel ``mm`` millimetres wide."""
    from fractions import Fraction

    value = Fraction(10.0 / float(mm)).limit_denominator(1 << 20)
    return value.numerator, value.denominator


def _ome_metadata(sig, nd: int, channels: int, planar: bool) -> dict:
    """tifffile's OME metadata: the axes of the written shape and the physical pixel size in micrometres."""
    axes = ("Z" if nd == 3 else "") + ("C" if planar else "") + "YX" + ("S" if channels > 1 and not planar else "")
    metadata = {"axes": axes}
    if sig.spacing is not None:
        for name, mm in zip("ZYX"[3 - nd:], sig.spacing):
            metadata[f"PhysicalSize{name}"] = float(mm) / LENGTH_UNITS["micrometer"]
            metadata[f"PhysicalSize{name}Unit"] = "\u00b5m"
    return metadata


def write_tiles(dest: str, layout: TiledLayout, bands, *, buffer: int) -> None:
    """Write a tiled BigTIFF at ``dest`` from ``bands`` (arrays of whole rows, in file order), tile by tile.

    Each band is cut into tiles as it arrives, a band at a time in memory
    (with the rows of an unfinished row of tiles); the encoder's threads take
    about ``buffer`` bytes of tiles at a time.  Written beside ``dest`` and
    moved into place when complete: an interruption leaves nothing under
    its name.
    """
    import struct

    import tifffile

    from ..errors import OutputError
    from ..parallel import thread_count
    from .files import atomic_path
    from .tiff import _quiet_log

    with atomic_path(dest) as tmp:
        try:
            with _quiet_log(), tifffile.TiffWriter(tmp, bigtiff=True, byteorder=layout.byteorder,
                                                  ome=layout.ome) as writer:
                # tifffile's encoder pulls `buffersize` bytes of tiles before encoding them (all of them
                # by default): bounded, it pulls a few rows of tiles at a time.
                tile_bytes = _tile_bytes(layout)
                writer.write(_tiles(bands, layout), shape=layout.shape, dtype=layout.dtype,
                             maxworkers=thread_count(), buffersize=max(buffer, 2 * thread_count() * tile_bytes),
                             **layout.arguments)
        except (ValueError, TypeError, KeyError, NotImplementedError, ZeroDivisionError, OverflowError,
                struct.error) as exc:
            raise OutputError(f"cannot write this TIFF: {exc}", subject=dest) from None


def _tile_bytes(layout: TiledLayout) -> int:
    return layout.tile[0] * layout.tile[1] * layout.samples * layout.dtype.itemsize


def _tiles(bands, layout: TiledLayout):
    """The tiles of each plane, row of tiles by row of tiles, from bands of rows that need not align with them."""
    import numpy as np

    height, width = layout.tile
    plane_rows = done = 0
    pending = None
    for band in bands:
        pending = band if pending is None else np.concatenate([pending, band])
        plane_rows += len(band)
        if plane_rows > layout.rows:
            raise RuntimeError("a band runs past the end of its plane")  # the caller's bands are wrong
        end = len(pending) if plane_rows == layout.rows else len(pending) - len(pending) % height
        for top in range(0, end, height):
            for left in range(0, pending.shape[1], width):
                yield pending[top:top + height, left:left + width]
        pending = pending[end:] if end < len(pending) else None
        if plane_rows == layout.rows:
            plane_rows, done = 0, done + 1
    if done != layout.planes or pending is not None:
        raise RuntimeError(f"{done} of {layout.planes} planes were given")
