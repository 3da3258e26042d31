"""Every file format convcli reads and writes, in one table: names, family, reader, writer, what it can hold.

The detector (:mod:`convcli.io.detect`) names a file's format by its row;
``--format`` names and output extensions are looked up here; :func:`convcli.io.read`
and :func:`convcli.io.write` call the row's reader and writer, and a batch
gives its outputs the row's first extension.

Readers and writers are named ``"module:function"`` (a module of
:mod:`convcli.io`) and imported only when a file of that format is read or
written: start-up imports none of numpy, Pillow, soundfile, nibabel or PyAV, and
this module imports none of the modules it names.  Their calls are the same
for every format:

- ``reader(source, fmt, *, limits, kind, key, auto_orient, stream) -> Signal``:
  `source` a :class:`~convcli.io.files.Source`, `fmt` the row's name,
  `limits` the read's :class:`~convcli.io.limits.Limits`, the rest the
  options of :func:`convcli.io.read` (`stream` true only for a ``streamed``
  format).  A reader refuses a `kind` its samples cannot take and ignores
  an option its format has no use for (`auto_orient` outside images, `key`
  outside ``.npz``; a ``.npy`` refuses a `key`): one set of options serves
  every file of a batch;
- ``writer(sig, dest, fmt, *, compress_level, range_mode, depth, quality) -> Written``:
  `depth` a ``--depth`` value of :data:`convcli.io.samples.DEPTHS` or None
  (the input's sample type), `quality` 1..100 or None.  A format that cannot
  hold the depth asked for writes the nearest it can and says so in
  ``Written.notes``; :func:`convcli.io.write` notes a `compress_level` or
  `quality` given to a format whose row does not list it in ``options``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import UsageError, did_you_mean


@dataclass(frozen=True)
class Format:
    """One format: how it is named, what it is, which functions read and write it, and what it can hold."""

    name: str  # as the detector reports it and meta["format"] keeps it: "png", "nifti-gz"
    family: str  # "array", "image", "audio", "nifti" or "video": content and name must agree on it
    description: str  # for messages: "PNG image"
    extensions: tuple[str, ...]  # lower case, with the dot; the first is the one a batch gives its outputs
    reader: str  # "module:function" in convcli.io
    writer: str
    # Over the memory budget, an input is mapped read-only and the result
    # written in place through a memory map (see convcli.io.read's stream).
    streamed: bool = False
    # Image formats: the (Pillow-style) modes written as they are; samples of
    # any other mode are converted to the nearest of these, and the writer says so.
    modes: frozenset[str] = frozenset()
    # The write options the writer uses ("compress_level", "quality"); any other given is noted as ignored.
    options: frozenset[str] = frozenset()
    # Holds several frames of one picture (an animation, pages): a Signal with ``frames`` set is written whole.
    frames: bool = False

    @property
    def extension(self) -> str:
        """The extension an output of this format gets when only the format is given."""
        return self.extensions[0]

    @property
    def names(self) -> tuple[str, ...]:
        """What ``--format`` accepts for this format: its name and its extensions without the dot."""
        return (self.name,) + tuple(ext[1:] for ext in self.extensions)

    def read_function(self):
        """The reader, its module imported now."""
        return _load(self.reader)

    def write_function(self):
        """The writer, its module imported now."""
        return _load(self.writer)


def _load(spec: str):
    """The function a ``"module:function"`` spec names, its module imported now (once; Python keeps it)."""
    module, function = spec.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)


_ARRAY = {"reader": "arrays:read_array_signal", "writer": "arrays:write_array_signal"}
_IMAGE = {"reader": "image:read_image", "writer": "image:write_image"}
_AUDIO = {"reader": "audio:read_audio", "writer": "audio:write_audio"}
_NIFTI = {"reader": "nifti:read_nifti", "writer": "nifti:write_nifti"}
_VIDEO = {"reader": "video:read_video", "writer": "video:write_video", "frames": True}

_LEVEL, _QUALITY = frozenset({"compress_level"}), frozenset({"quality"})

FORMATS = (
    Format("npy", "array", "NumPy array", (".npy",), **_ARRAY, streamed=True, frames=True),
    Format("npz", "array", "NumPy archive", (".npz",), **_ARRAY, options=_LEVEL, frames=True),
    Format("png", "image", "PNG image", (".png",), **_IMAGE,
           modes=frozenset({"1", "L", "LA", "RGB", "RGBA", "I;16", "LA;16", "RGB;16", "RGBA;16"}), options=_LEVEL,
           frames=True),
    Format("jpeg", "image", "JPEG image", (".jpg", ".jpeg", ".jpe"), **_IMAGE, modes=frozenset({"L", "RGB", "CMYK"}),
           options=_QUALITY),
    # TIFF holds every sample type; its modes are those a Pillow-style mode names, for the other formats.
    Format("tiff", "image", "TIFF image", (".tif", ".tiff"), reader="tiff:read_tiff", writer="tiff:write_tiff",
           modes=frozenset({"1", "L", "LA", "RGB", "RGBA", "CMYK", "I;16", "I;16S", "I", "F", "LA;16", "RGB;16",
                            "RGBA;16"}), options=_LEVEL | _QUALITY, frames=True),
    Format("bmp", "image", "BMP image", (".bmp",), **_IMAGE, modes=frozenset({"1", "L", "RGB", "RGBA"})),
    Format("webp", "image", "WebP image", (".webp",), **_IMAGE, modes=frozenset({"RGB", "RGBA"}), options=_QUALITY,
           frames=True),
    Format("gif", "image", "GIF image", (".gif",), **_IMAGE, modes=frozenset({"L", "RGB", "RGBA"}), frames=True),
    Format("pnm", "image", "Netpbm image", (".ppm", ".pgm", ".pbm", ".pnm"), **_IMAGE,
           modes=frozenset({"1", "L", "RGB", "I;16"})),
    Format("wav", "audio", "WAV audio", (".wav", ".wave"), **_AUDIO),
    Format("flac", "audio", "FLAC audio", (".flac",), **_AUDIO, options=_LEVEL),
    Format("ogg", "audio", "Ogg audio", (".ogg", ".oga"), **_AUDIO),
    Format("opus", "audio", "Opus audio", (".opus",), **_AUDIO),
    Format("aiff", "audio", "AIFF audio", (".aif", ".aiff", ".aifc"), **_AUDIO),
    Format("au", "audio", "Sun/NeXT audio", (".au", ".snd"), **_AUDIO),
    Format("caf", "audio", "CAF audio", (".caf",), **_AUDIO),
    Format("w64", "audio", "Wave64 audio", (".w64",), **_AUDIO),
    Format("mp3", "audio", "MP3 audio", (".mp3",), **_AUDIO),
    Format("nifti", "nifti", "NIfTI volume", (".nii",), **_NIFTI, streamed=True),
    Format("nifti-gz", "nifti", "gzipped NIfTI volume", (".nii.gz",), **_NIFTI),
    # Videos are filtered as a stream of frames (convcli.pipeline.video); the
    # reader and writer here take a whole clip, as frames of RGB samples.
    Format("mp4", "video", "MP4 video", (".mp4", ".m4v"), **_VIDEO),
    Format("mov", "video", "QuickTime video", (".mov", ".qt"), **_VIDEO),
    Format("mkv", "video", "Matroska video", (".mkv",), **_VIDEO),
    Format("webm", "video", "WebM video", (".webm",), **_VIDEO),
    Format("avi", "video", "AVI video", (".avi",), **_VIDEO),
)

_BY_NAME = {row.name: row for row in FORMATS}
_BY_EXTENSION = {ext: row.name for row in FORMATS for ext in row.extensions}
_BY_FORMAT_NAME = {name: row.name for row in FORMATS for name in row.names}
STREAMED = tuple(row.name for row in FORMATS if row.streamed)  # ("npy", "nifti")


def get(name: str) -> Format:
    """The row of the format `name` (a name the detector or :func:`format_from_name` gave)."""
    return _BY_NAME[name]


def family_of(name: str | None) -> str | None:
    """The family of the format `name`; None for anything that names no format (None, ``"gzip"``)."""
    row = _BY_NAME.get(name)
    return row.family if row is not None else None


def from_extension(path: str) -> str | None:
    """The format an output or input name asks for (None for an unknown extension)."""
    from .files import file_suffix

    return _BY_EXTENSION.get(file_suffix(path))


def format_from_name(name: str, subject: str = "--format") -> str:
    """Resolve a ``--format`` value such as ``png``, ``jpg`` or ``nii.gz``."""
    fmt = _BY_FORMAT_NAME.get(str(name).lower().lstrip("."))
    if fmt is None:
        # "nifti-gz" is accepted but not offered: people type nii.gz.
        known = ", ".join(sorted({k for k in _BY_FORMAT_NAME if "-" not in k}))
        hint = did_you_mean(name, sorted(_BY_FORMAT_NAME))
        raise UsageError(f"unknown format {name!r}; known: {known}{hint}", subject=subject)
    return fmt
