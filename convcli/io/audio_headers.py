"""How many frames an uncompressed audio file's header declares, read from its chunks.

libsndfile quietly shortens a PCM file's frame count to the bytes present,
so a file cut short in a download or a full disk would be filtered as if it
were whole.  These readers find the count the header itself gives (WAV,
WAVEX, RIFX, RF64, Wave64, AIFF/AIFC, AU, CAF) so that the reader can say
how much is missing.  They read a few bytes per chunk, walk a bounded
number of chunks, and return None where the header leaves the length open.
"""
from __future__ import annotations

import struct

MAX_CHUNKS = 256  # a hostile file of empty chunks cannot keep the walk going
# Writers that cannot seek back (FFmpeg and SoX writing to a pipe) leave a
# 32-bit size at or near its maximum: 0xFFFFFFFF, 0x7FFFF000, 0x7F000000.
UNSPECIFIED = 0x7F000000


def declared_frames(fh, sf_format: str, block_align: int) -> int | None:
    """The frame count the header of the open file `fh` declares, or None when it declares none.

    `sf_format` is libsndfile's name for the container (``"WAV"``,
    ``"AIFF"``, ...), `block_align` the bytes of one frame.
    """
    if block_align <= 0:
        return None
    fh.seek(0)
    head = fh.read(12)
    try:
        if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and sf_format in ("WAV", "WAVEX", "RF64"):
            nbytes = _riff_data_bytes(fh, big=head[:4] == b"RIFX")
        elif head[:4] == b"FORM" and sf_format == "AIFF":
            frames = _aiff_frames(fh)
            nbytes = None if frames is None else frames * block_align
        elif head[:4] in (b".snd", b"dns.") and sf_format == "AU":
            (nbytes,) = struct.unpack(">I" if head[:4] == b".snd" else "<I", head[8:12])
        elif head[:4] == b"riff" and sf_format == "W64":
            nbytes = _w64_data_bytes(fh)
        elif head[:4] == b"caff" and sf_format == "CAF":
            nbytes = _caf_data_bytes(fh)
        else:
            return None
    except (struct.error, OSError, ValueError):
        return None
    if nbytes is None or nbytes >= UNSPECIFIED:
        return None
    return nbytes // block_align


def _chunks(fh, start: int, header: str, *, align: int = 2, size_includes_header: bool = False):
    """(id, body offset, body size) of each chunk from `start`: `header` is the struct of id and size."""
    step = struct.calcsize(header)
    offset = start
    for _ in range(MAX_CHUNKS):
        fh.seek(offset)
        raw = fh.read(step)
        if len(raw) < step:
            return
        cid, size = struct.unpack(header, raw)
        body = size - step if size_includes_header else size
        if body < 0:
            return
        yield cid, offset + step, body
        offset += step + body
        offset += -offset % align


def _riff_data_bytes(fh, *, big: bool) -> int | None:
    """The 'data' chunk's size; RF64 and BW64 give it in their 'ds64' chunk."""
    data64 = None
    for cid, at, size in _chunks(fh, 12, ">4sI" if big else "<4sI"):
        if cid == b"ds64" and size >= 16:
            fh.seek(at + 8)
            (data64,) = struct.unpack("<Q", fh.read(8))
        elif cid == b"data":
            return data64 if size == 0xFFFFFFFF and data64 is not None else size
    return None


def _aiff_frames(fh) -> int | None:
    """numSampleFrames of the 'COMM' chunk."""
    for cid, at, size in _chunks(fh, 12, ">4sI"):
        if cid == b"COMM" and size >= 6:
            fh.seek(at + 2)
            (frames,) = struct.unpack(">I", fh.read(4))
            return frames
    return None


def _w64_data_bytes(fh) -> int | None:
    """The 'data' chunk's size: Wave64 chunks are 16-byte GUIDs, sizes count their own 24 bytes, 8-byte aligned."""
    for guid, _, size in _chunks(fh, 40, "<16sQ", align=8, size_includes_header=True):
        if guid[:4] == b"data":
            return size
    return None


def _caf_data_bytes(fh) -> int | None:
    """The 'data' chunk's size less its 4-byte edit count; -1 (to the end of the file) declares none."""
    for cid, _, size in _chunks(fh, 8, ">4sq", align=1):
        if cid == b"data":
            return size - 4 if size >= 4 else None
    return None


def mp3_counts_frames(fh) -> bool:
    """Whether an MP3's first frame carries a Xing, Info or VBRI header, which gives the exact frame count.

    Without one, libsndfile estimates the count from the bit rate, and a
    decoded stream a few frames shorter is no sign of a cut file.
    """
    fh.seek(0)
    head = fh.read(10)
    start = 0
    if head[:3] == b"ID3" and len(head) == 10:
        for byte in head[6:10]:  # a "syncsafe" integer: 7 bits a byte
            start = (start << 7) | (byte & 0x7F)
        start += 20 if head[5] & 0x10 else 10  # the header, and the footer when the flags say there is one
    fh.seek(start)
    frame = fh.read(200)  # the tag sits after the side information, within the first 40 bytes of the frame
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))
