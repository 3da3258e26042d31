"""Zarr arrays and OME-Zarr images: opened chunk by chunk, never read whole.

A Zarr input is a directory: named ``*.zarr``, or holding ``zarr.json``
(format 3), ``.zarray`` or ``.zgroup`` (format 2).  A group is read as an
OME-Zarr image: level 0 of its first multiscales, its axes mapped to roles
(``z``, ``y``, ``x`` spatial, ``c`` channels, ``t`` time points) and the
scale of its first dataset, in the axes' units, as the voxel spacing.

An output is written beside its destination (``out.zarr.partial``) with
the input's Zarr format and compressor, chunk by chunk by whichever worker
computed the chunk, and moved into place once every chunk is there.  An
OME-Zarr output keeps its input's metadata with one level, its scale
multiplied by the stride.

``zarr`` comes with the ``scale`` extra and is imported only here.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

from ..errors import DataError, UsageError

EXTRA = "scale"
MARKERS = ("zarr.json", ".zarray", ".zgroup")
PARTIAL = ".partial"
# OME-Zarr (NGFF) length units, in millimetres (Signal.spacing's unit).
LENGTH_UNITS = {"nanometer": 1e-6, "micrometer": 1e-3, "millimeter": 1.0, "centimeter": 10.0, "meter": 1000.0,
                "angstrom": 1e-7}


def is_zarr(path: str) -> bool:
    """Whether ``path`` names a Zarr store: a directory named ``*.zarr`` or holding Zarr metadata."""
    if not path or path == "-" or not os.path.isdir(path):
        return False
    return path.rstrip("/\\").lower().endswith(".zarr") or any(
        os.path.exists(os.path.join(path, marker)) for marker in MARKERS)


def names_zarr(path: str | None) -> bool:
    """Whether an output name asks for a Zarr store."""
    return bool(path) and path.rstrip("/\\").lower().endswith(".zarr")


def require(feature: str, subject: str):
    """Import zarr, or refuse ``feature`` in one line naming the extra to install."""
    try:
        import dask.array  # noqa: F401
        import zarr
    except ImportError:
        raise UsageError(f"{feature} needs the '{EXTRA}' extra: pip install 'convcli[{EXTRA}]'",
                         subject=subject) from None
    return zarr


@dataclass
class ZarrImage:
    """An opened Zarr array (level 0 of an OME-Zarr image) and what is needed to write a result like it."""

    array: object  # zarr.Array
    axes: tuple[str, ...]  # one name per axis: t, c, z, y, x (a plain array: the last three spatial)
    spacing: tuple[float, ...] | None  # mm per spatial axis, from the OME scale
    attrs: dict = field(default_factory=dict)  # the group's attributes (OME-Zarr), or {} for a plain array
    levels: int = 1  # datasets of the multiscales (only level 0 is read)
    notes: list[str] = field(default_factory=list)  # what opening it left out, for the report

    @property
    def zarr_format(self) -> int:
        """The Zarr format of an output like it."""
        return self.array.metadata.zarr_format

    @property
    def compressors(self):
        """The compressors of an output like it."""
        return self.array.compressors

    @property
    def filters(self):
        """The filters of an output like it (None: none)."""
        return self.array.filters or None

    @property
    def spatial(self) -> tuple[int, ...]:
        """The array's axes that are spatial, in order."""
        return tuple(i for i, name in enumerate(self.axes) if name not in ("t", "c"))


def open_zarr(path: str) -> ZarrImage:
    """Open the Zarr array or OME-Zarr image at ``path`` without reading a sample."""
    zarr = require("a Zarr input", path)
    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:  # zarr raises its own, KeyError and ValueError for damaged metadata
        raise DataError(f"not a readable Zarr store ({type(exc).__name__}: {exc})", subject=path) from None
    if isinstance(node, zarr.Array):
        return ZarrImage(node, _plain_axes(node.ndim, path), None)
    attrs = node.attrs.asdict()
    multiscales = (attrs.get("ome") or attrs).get("multiscales")
    if not multiscales:
        raise DataError("a Zarr group that is not an OME-Zarr image (no multiscales); give the path of one of its "
                        "arrays", subject=path)
    scale = multiscales[0]
    datasets = scale.get("datasets") or []
    if not datasets:
        raise DataError("OME-Zarr multiscales without datasets", subject=path)
    try:
        array = node[datasets[0]["path"]]
    except (KeyError, TypeError) as exc:
        raise DataError(f"OME-Zarr level 0 ({exc}) is missing", subject=path) from None
    axes = _ome_axes(scale.get("axes"), array.ndim, path)
    return ZarrImage(array, axes, _spacing(scale, datasets[0], axes, path), attrs, len(datasets))


def _plain_axes(ndim: int, path: str) -> tuple[str, ...]:
    if not 1 <= ndim <= 3:
        raise DataError(f"a Zarr array of {ndim} axes without OME-Zarr axes; convcli reads 1 to 3 spatial axes "
                        "(an OME-Zarr image names its t and c axes)", subject=path)
    return ("z", "y", "x")[3 - ndim:]


def _ome_axes(axes, ndim: int, path: str) -> tuple[str, ...]:
    if axes is None:
        names = ("t", "c", "z", "y", "x")[5 - ndim:]  # OME-Zarr 0.3 and earlier: the fixed order
    else:
        names = tuple((a.get("name") if isinstance(a, dict) else a) for a in axes)
    if len(names) != ndim:
        raise DataError(f"OME-Zarr axes {names} do not match level 0's {ndim} axes", subject=path)
    roles = []
    for name, axis in zip(names, axes or names):
        kind = axis.get("type") if isinstance(axis, dict) else None
        role = {"time": "t", "channel": "c"}.get(kind, str(name).lower())
        if role not in ("t", "c", "z", "y", "x"):
            role = "x" if kind == "space" else role
        roles.append(role)
    if roles.count("t") > 1 or roles.count("c") > 1 or sum(r not in ("t", "c") for r in roles) > 3:
        raise DataError(f"OME-Zarr axes {names}: convcli takes at most one time, one channel and three space axes",
                        subject=path)
    if sum(r not in ("t", "c") for r in roles) == 0:
        raise DataError(f"OME-Zarr axes {names} have no space axis", subject=path)
    return tuple(r if r in ("t", "c") else "s" for r in roles)


def _spacing(scale: dict, dataset: dict, axes, path: str) -> tuple[float, ...] | None:
    transforms = list(scale.get("coordinateTransformations") or []) + list(dataset.get("coordinateTransformations") or [])
    factors = [1.0] * len(axes)
    found = False
    for transform in transforms:
        if isinstance(transform, dict) and transform.get("type") == "scale" and "scale" in transform:
            found = True
            factors = [f * float(s) for f, s in zip(factors, transform["scale"])]
    if not found:
        return None
    units = [a.get("unit") if isinstance(a, dict) else None for a in (scale.get("axes") or [None] * len(axes))]
    spacing = []
    for axis, (role, factor, unit) in enumerate(zip(axes, factors, units)):
        if role in ("t", "c"):
            continue
        if unit is None:
            return None  # no unit: physical lengths cannot be converted, sample counts still work
        if unit not in LENGTH_UNITS:
            raise DataError(f"OME-Zarr axis {axis} has the unit {unit!r}; space axes take "
                            f"{', '.join(LENGTH_UNITS)}", subject=path)
        spacing.append(factor * LENGTH_UNITS[unit])
    return tuple(spacing)


# Every chunk is written, even one that holds only the fill value: zarr's test for that compares the
# whole chunk through a slow path (a tenth of a zstd write's time), and a chunk left out would be
# computed again by --resume.
WRITE_CONFIG = {"write_empty_chunks": True}


def create_like(image: ZarrImage, dest: str, shape, chunks, dtype, strides: dict[int, int], *, resume: bool):
    """The partial store for a result like ``image`` (its format, compressor and OME metadata), opened to write.

    ``strides`` maps an axis of the array to its stride.  With ``resume`` an
    existing partial store of the same shape and chunks is reopened as it is.
    """
    import zarr

    partial = dest.rstrip("/\\") + PARTIAL
    path = _array_path(image)
    if resume and os.path.isdir(partial):
        try:
            existing = zarr.open_array(partial if path is None else os.path.join(partial, path), mode="r+")
            existing = existing.with_config(WRITE_CONFIG)
        except Exception:
            existing = None
        if existing is not None and tuple(existing.shape) == tuple(shape) and tuple(existing.chunks) == tuple(chunks) \
                and existing.dtype == dtype:
            return existing, partial
        raise DataError(f"cannot resume: {partial} holds another result (shape, chunks or type differ); "
                        "remove it or run without --resume", subject=dest)
    if os.path.lexists(partial):
        raise DataError(f"{partial} holds an interrupted run; complete it with --resume or remove it", subject=dest)
    fmt = image.zarr_format
    if path is None:
        root = partial
        array_store = partial
    else:
        group = zarr.open_group(partial, mode="w-", zarr_format=fmt)
        group.attrs.update(_scaled_attrs(image, strides))
        root, array_store = partial, os.path.join(partial, path)
        del group
    array = zarr.create_array(array_store, shape=tuple(shape), chunks=tuple(chunks), dtype=dtype,
                              zarr_format=fmt, compressors=image.compressors, filters=image.filters,
                              fill_value=0, config=WRITE_CONFIG, **_dimension_names(image, fmt))
    return array, root


def _array_path(image: ZarrImage) -> str | None:
    if not image.attrs:
        return None
    return _multiscales(image.attrs)[0]["datasets"][0]["path"]


def _dimension_names(image: ZarrImage, fmt: int) -> dict:
    names = getattr(image.array.metadata, "dimension_names", None) if fmt == image.array.metadata.zarr_format == 3 \
        else None
    return {"dimension_names": names} if names else {}


def _multiscales(attrs: dict) -> list:
    return (attrs.get("ome") or attrs)["multiscales"]


def _scaled_attrs(image: ZarrImage, strides: dict[int, int]) -> dict:
    """The group's attributes with one level (level 0) whose scale is multiplied by the stride."""
    attrs = copy.deepcopy(image.attrs)
    scales = _multiscales(attrs)
    first = scales[0]
    dataset = first["datasets"][0]
    for transform in dataset.get("coordinateTransformations") or []:
        if transform.get("type") == "scale":
            transform["scale"] = [s * strides.get(axis, 1) for axis, s in enumerate(transform["scale"])]
        elif transform.get("type") == "translation":
            # the centre of the first window stays where the input's sample 0 was only with "same"
            # padding and stride 1; a stride moves the grid, which the scale already says
            pass
    first["datasets"] = [dataset]
    del scales[1:]
    return attrs


def finish(partial: str, dest: str) -> None:
    """Move a complete partial store into place: ``dest`` appears whole or not at all."""
    if os.path.lexists(dest):
        import shutil

        shutil.rmtree(dest) if os.path.isdir(dest) and not os.path.islink(dest) else os.unlink(dest)
    os.replace(partial, dest)


def chunk_written(array, index: tuple[int, ...]) -> bool:
    """Whether the chunk at grid position ``index`` of ``array`` is stored (a resumed run keeps it)."""
    key = array.metadata.encode_chunk_key(index)
    path = os.path.join(str(array.store.root), array.path, key) if array.path else os.path.join(
        str(array.store.root), key)
    return os.path.exists(path)
