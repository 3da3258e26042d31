"""The in-memory form of every input (samples plus what is needed to write them back), and what a write did.

``Signal.meta`` describes the file the samples came from.  A reader fills it,
:func:`convcli.io.read` adds ``source``, :func:`convcli.io.derive` copies it to
the filtered result (``dpi`` and ``affine`` follow a stride), and a writer
puts back what its format can hold.  Every key, who sets it and who reads it
(readers and writers are those of :mod:`convcli.io.formats`):

=====================  ============================  ======================================================
key                    set by                        read by
=====================  ============================  ======================================================
format                 every reader;                 ``write``: the output format when neither the name nor
                       ``pipeline.classify``         ``format=`` gives one; ``pipeline.streamed``: a
                                                     streamed result keeps its input's format; JPEG writer:
                                                     a JPEG input's tables are reused
source                 ``read``                      ``write``: names the input in a ``DataError``
dtype                  every reader (a scaled        image, TIFF and NIfTI writers: the type written back;
                       NIfTI: float32);              audio writer: the nearest subtype, and whether
                       ``pipeline.classify``         ``bits`` applies; ``depth=`` scales from it;
                                                     ``pipeline.chain``: the precision;
                                                     ``pipeline.colour``: the value of full scale
mode                   image and TIFF readers;       image writer: the mode written, or the nearest one
                       ``pipeline.classify``         the format stores; TIFF writer: ``1`` is bilevel;
                                                     ``pipeline.colour`` (CMYK)
alpha                  image and TIFF readers        ``pipeline.alpha``: the last channel is alpha
icc_profile            image and TIFF readers        image and TIFF writers; ``pipeline.colour``: tone
                                                     curves
dpi                    image and TIFF readers        image writer (TIFF: where no ``resolution``);
                                                     ``derive`` divides it by the stride
resolution             TIFF reader                   TIFF writer; ``derive`` divides it by the stride
tiff                   TIFF reader                   TIFF writer: byte order, BigTIFF, each page's layout
                                                     and other tags, the input's shape
thumbnails_dropped     TIFF reader                   ``pipeline.filter``'s input notes
exif                   image reader (JPEG, WebP,     image writer (JPEG, WebP, PNG)
                       PNG)
xmp                    image reader (JPEG, WebP)     image writer (JPEG, WebP)
comment                image reader (JPEG, GIF)      image writer (JPEG, GIF)
jpeg                   image reader (JPEG)           image writer: a JPEG's tables, subsampling, progression
quality                image reader (JPEG)           image writer: JPEG (other input) and WebP quality
lossless               image reader (WebP)           image writer: a lossless WebP stays lossless
png_chunks             image reader (PNG)            image writer (PNG): text, XMP, colour-space chunks
png_dropped            image reader (PNG)            image writer (PNG): names the chunks not kept
animation              image reader (GIF, WebP,      image writer: durations, loop, disposal, blend,
                       PNG)                          background of every frame; TIFF writer's note
oriented               image reader                  ``pipeline.filter``'s input notes
transparency_dropped   image reader (16-bit PNG)     ``pipeline.filter``'s input notes
metadata_damaged       image reader (Pillow's        ``pipeline.filter``'s input notes
                       warning on damaged EXIF)
sf_format              audio reader                  audio writer: WAVEX and RF64 stay so
subtype                audio reader                  audio writer: kept where the format can hold it
endian                 audio reader                  audio writer
bits                   audio reader                  audio writer: the significant bits of integer samples;
                                                     ``pipeline.chain``: the precision
short_read             audio reader (a file cut      ``pipeline.filter``'s input notes
                       short)
key                    array reader (``.npz``)       array writer: the archive member's name
nifti_header           NIfTI reader                  NIfTI writer: every field kept, scaling included
affine                 NIfTI reader                  NIfTI writer: the stride applied to qform and sform;
                                                     ``derive`` strides it
spacing_invalid        NIfTI reader                  ``pipeline.filter``'s input notes
frame_rate             video reader (a whole clip)   video writer: frames per second
=====================  ============================  ======================================================

Values are as the file states them: ``format`` a row name of the table,
``dtype`` a numpy type name, ``mode`` a Pillow-style mode (``"L"``,
``"RGB;16"``, ``"I;16S"``; absent for samples no mode names, such as float64
RGB), ``dpi`` (x, y), ``resolution`` ((x numerator, denominator), (y ...),
TIFF unit), ``icc_profile``, ``exif`` and ``xmp`` bytes, ``quality`` 1..100,
``png_chunks`` (type, body, after the pixels) triples, ``animation`` lists
with one entry per frame (``durations`` in ms, ``disposal`` as ``"keep"``,
``"background"``, ``"previous"``), ``oriented`` the EXIF orientation
applied, ``nifti_header`` a nibabel header, ``affine`` a 4x4 array,
``spacing_invalid`` the voxel sizes ignored, ``short_read`` (frames read,
frames the header declares).  A key nothing reads is not
kept.  What steers a write or a filter is an argument (``write(...,
range=)``) or a field (``Signal.streamed``), never a key here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = ("signal", "audio", "image", "volume")


@dataclass
class Signal:
    """Samples of one input and the metadata that travels with them.

    ``data`` holds the spatial axes first (time; rows, columns; slices, rows,
    columns), after a leading axis of frames when ``frames`` is set, and,
    when ``channel_axis`` is -1, one last axis of channels that are filtered
    independently.  Samples keep the sample type they were read
    with (uint8, uint16, int16, float32, ...); ``meta`` carries what a writer
    needs to put back exactly what was read (format, subtype, ICC profile,
    DPI, NIfTI header, ...): its keys are listed in the module docstring.
    """

    data: np.ndarray
    kind: str = "signal"
    channel_axis: int | None = None
    sample_rate: float | None = None  # audio: samples per second
    spacing: tuple[float, ...] | None = None  # per spatial axis, in millimetres
    meta: dict[str, Any] = field(default_factory=dict)
    streamed: bool = False  # ``data`` maps a file over the memory budget, read-only: filter it band by band
    # A streamed audio input: ``data`` gives only its shape and type, and ``blocks()`` reads its samples
    # block by block from the start, as often as called (see convcli.io.audio.AudioBlocks).
    blocks: Any = None
    frames: bool = False  # ``data``'s first axis is frames (an animation, a video, time points), not spatial

    @property
    def spatial_ndim(self) -> int:
        """How many axes are spatial (1 audio/signal, 2 image, 3 volume); frames and channels are not."""
        return self.data.ndim - (0 if self.channel_axis is None else 1) - int(self.frames)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The lengths of the spatial axes."""
        shape = self.data.shape[int(self.frames):]
        return shape if self.channel_axis is None else shape[:-1]


@dataclass
class Written:
    """What a write did: where, in which format, and what it had to change."""

    path: str
    format: str
    clipped: int = 0  # integer samples outside the output range, clipped
    notes: list[str] = field(default_factory=list)  # conversions the format forced
