"""Which format a file holds, from its first bytes, cross-checked against its name.

Content decides how an input is read.  The extension is only a cross-check:
a file whose bytes are of another family than its name says (PNG bytes in a
``.wav``, text in a ``.png``) is refused, while a TIFF named ``.png`` is still
an image and is read as the TIFF it is.  Formats, their families and
extensions are the rows of :mod:`convcli.io.formats`.
"""
from __future__ import annotations

import struct

from ..errors import DataError
from .formats import from_extension, get


def sniff(head: bytes) -> str | None:
    """The format named by the magic bytes at the start of a file, or None.

    A gzip stream is ``"gzip"``, not yet a format: :func:`detect` decides
    whether it is a gzipped NIfTI volume.
    """
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    video = sniff_video(head)
    if video is not None:
        return video
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "npz"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head.startswith(b"GIF87a") or head.startswith(b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in b" \t\r\n#":
        return "pnm"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head.startswith(b".snd") or head.startswith(b"dns."):
        return "au"
    if head.startswith(b"caff"):
        return "caf"
    if head.startswith(b"riff\x2e\x91\xcf\x11"):
        return "w64"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "mp3"
    if is_nifti_header(head):
        return "nifti"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    return None


# ISO base media files that are not videos: still images (HEIF, AVIF) and audio (M4A, M4B).
_NOT_VIDEO_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"M4A ", b"M4B ",
                     b"M4P ", b"F4A "}
# The atoms a QuickTime file written before the ftyp atom existed may start with.
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"pnot")


def sniff_video(head: bytes) -> str | None:
    """The video container named by the first bytes: mp4, mov, mkv, webm, avi, or None.

    MP4 and QuickTime share the ISO box layout and differ by the ftyp brand
    (``qt  `` is QuickTime); Matroska and WebM share EBML and differ by the
    DocType near the start of the header.
    """
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _NOT_VIDEO_BRANDS:
            return None
        return "mov" if brand == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS and struct.unpack(">I", head[:4])[0] >= 8:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head[:64] else "mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def is_nifti_header(head: bytes) -> bool:
    """True when `head` starts with a NIfTI-1 or NIfTI-2 header (either byte order)."""
    if len(head) >= 348:
        for order in "<>":
            (size,) = struct.unpack(order + "i", head[:4])
            if size == 348 and head[344:347] in (b"n+1", b"ni1"):
                return True
            if size == 540 and head[4:7] in (b"n+2", b"ni2"):
                return True
    return False


def detect(source) -> str:
    """The format of an input, from its content, cross-checked against its extension."""
    head = source.head(1024)
    if not head:
        raise DataError("empty file (0 bytes)", subject=source.name)
    fmt = sniff(head)
    by_name = from_extension(source.path) if source.path else None
    if fmt == "gzip":
        fmt = "nifti-gz" if by_name == "nifti-gz" or _gunzip_head_is_nifti(source) else None
    if fmt is None:
        if by_name is not None:
            raise DataError(
                f"the content is not a {get(by_name).description} (unrecognised or corrupt bytes)", subject=source.name
            )
        raise DataError("unrecognised file format (no known magic bytes)", subject=source.name)
    if by_name is not None and get(by_name).family != get(fmt).family:
        raise DataError(
            f"the content is a {get(fmt).description} but the name says {get(by_name).description}; "
            "rename the file to match its content",
            subject=source.name,
        )
    return fmt


def _gunzip_head_is_nifti(source) -> bool:
    import zlib

    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        head = d.decompress(source.head(4096), 600)
    except zlib.error:
        return False
    return is_nifti_header(head)
