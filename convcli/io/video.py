"""Video files through PyAV (FFmpeg's libraries, the optional extra ``convcli[video]``): pictures in, pictures out.

A video is never held whole to be filtered.  :class:`VideoReader` decodes the
first video stream picture by picture, each plane a numpy array of its
stored samples at its own resolution, and carries every packet of the other
streams (audio, subtitles, a second video) along with the pictures;
:func:`open_writer` encodes pictures into a file of the same container and
copies those packets into it unchanged.  Kept from the input: container,
codec, pixel format, frame rate, time base, timestamps, colour metadata
(primaries, transfer, matrix, range), rotation, sample aspect ratio,
metadata, chapters and every other stream.

Planes are handed out as stored: Y, U and V (or G, B and R; grey; alpha).
A packed or semi-planar format (nv12, rgb24, yuyv422) is unpacked to its
planar twin (yuv420p, gbrp, yuv422p) and packed again for the encoder: a
rearrangement of the same samples, not a conversion.  ``work="rgb"``
converts to planar RGB instead (with the clip's own matrix and range).

:func:`read_video` and :func:`write_video` are the format table's reader
and writer: a whole clip as frames of RGB samples (``Signal.frames``),
within the memory budget.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from fractions import Fraction

from ..errors import ConvcliError, DataError, OutputError, UsageError

VIDEO_HINT = 'video files need PyAV: pip install "convcli[video]"'

# The muxer that writes each container of the table of formats.
MUXERS = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm", "avi": "avi"}

# --codec names (and the decoders' names) -> the encoder convcli uses.
ENCODERS = {
    "h264": "libx264", "avc": "libx264", "x264": "libx264", "libx264": "libx264",
    "hevc": "libx265", "h265": "libx265", "x265": "libx265", "libx265": "libx265",
    "vp9": "libvpx-vp9", "libvpx-vp9": "libvpx-vp9", "vp8": "libvpx", "libvpx": "libvpx",
    "av1": "libsvtav1", "svtav1": "libsvtav1", "libsvtav1": "libsvtav1",
    "ffv1": "ffv1", "prores": "prores_ks", "prores_ks": "prores_ks", "mjpeg": "mjpeg", "mpeg4": "mpeg4",
}
# Constant quality by default where the encoder has it: FFmpeg's own defaults
# (x264 23, x265 28, SVT-AV1 35), and for VP9, whose FFmpeg default is a low
# fixed bit rate, the constant quality FFmpeg's guide suggests for 1080p.
DEFAULT_CRF = {"libx264": 23, "libx265": 28, "libvpx-vp9": 31, "libsvtav1": 35}
CRF_RANGE = {"libx264": (0, 51), "libx265": (0, 51), "libvpx-vp9": (0, 63), "libsvtav1": (0, 63), "libvpx": (4, 63)}
LOSSLESS = ("ffv1",)
# ProRes profiles as the decoder names them -> prores_ks's profile option.
PRORES_PROFILES = {"Proxy": "proxy", "LT": "lt", "Standard": "standard", "HQ": "hq", "4444": "4444",
                   "XQ": "4444xq", "4444XQ": "4444xq"}


def _av():
    """PyAV, imported on first use; without it, the one line that says how to install it."""
    import os

    # SVT-AV1 logs to stderr by itself, not through FFmpeg's (silent) log: fatal errors only.
    os.environ.setdefault("SVT_LOG", "0")
    try:
        import av
    except ImportError:
        raise UsageError(VIDEO_HINT) from None
    return av


# --------------------------------------------------------------------------- pixel formats
@dataclass(frozen=True)
class Plane:
    """One plane of a planar pixel format: what it holds and how its samples are stored."""

    role: str  # "luma", "chroma", "alpha" or "rgb" (a plane of G, B or R)
    dtype: str  # "uint8", or "uint16" for more than 8 bits
    bits: int  # significant bits of a sample: 8, 10, 12, 16
    width: int
    height: int

    @property
    def neutral(self) -> int:
        """The sample of no colour on a chroma plane (128, 512 at 10 bits): chroma is a difference from it."""
        return 1 << (self.bits - 1)


def planar_twin(pix_fmt: str, work: str = "stored") -> str:
    """The planar format whose planes hold ``pix_fmt``'s samples (itself when it is planar already).

    With ``work="rgb"`` the planar RGB format of the same depth (gbrp, gbrp10le, ...).
    """
    av = _av()
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    comps = fmt.components
    bits = max(c.bits for c in comps)
    alpha = any(c.is_alpha for c in comps)
    if work == "stored" and _plainly_planar(fmt):
        return pix_fmt
    if fmt.has_palette:
        base, bits = ("gbrap" if alpha else "gbrp"), 8
    elif work == "rgb" or fmt.is_rgb:
        base = "gbrap" if alpha else "gbrp"
    elif len([c for c in comps if not c.is_alpha]) < 3:
        base = "gray" if not alpha else "yuva444p"
    else:
        chroma = next(c for c in comps if _is_chroma(c))
        shifts = (16 // chroma.width, 16 // chroma.height)
        base = {(1, 1): "yuv444p", (2, 1): "yuv422p", (2, 2): "yuv420p", (1, 2): "yuv440p", (4, 1): "yuv411p",
                (4, 4): "yuv410p"}.get(shifts, "yuv444p")
        if alpha:
            base = base.replace("yuv", "yuva")
    for depth in [bits] + [b for b in (10, 12, 16) if b > bits]:
        name = base if depth <= 8 else _deep(base, depth)
        if _known_format(name):
            return name
    raise DataError(f"pixel format {pix_fmt} is not supported (no planar form of it)")


def _deep(base: str, bits: int) -> str:
    if base == "gray":
        return f"gray{bits}le"
    return f"{base}{bits}le"


def _known_format(name: str) -> bool:
    try:
        _av().VideoFormat(name)
    except (ValueError, TypeError):
        return False
    return True


def _plainly_planar(fmt) -> bool:
    """One component per plane, little-endian samples of at most 16 bits, no palette or bit packing."""
    comps = fmt.components
    if fmt.has_palette or fmt.is_bit_stream or fmt.is_bayer or fmt.is_big_endian and fmt.bits_per_pixel > 8:
        return False
    if any(c.bits > 16 for c in comps) or "f32" in fmt.name or "f16" in fmt.name:
        return False
    return len({c.plane for c in comps}) == len(comps)


def plane_layout(pix_fmt: str, width: int, height: int) -> tuple[Plane, ...]:
    """The planes of a planar format at a picture size, in plane order."""
    fmt = _av().VideoFormat(pix_fmt, width, height)
    rgb = fmt.is_rgb
    planes = []
    for comp in sorted(fmt.components, key=lambda c: c.plane):
        role = "alpha" if comp.is_alpha else "rgb" if rgb else "chroma" if _is_chroma(comp) else "luma"
        planes.append(Plane(role, "uint8" if comp.bits <= 8 else "uint16", comp.bits, comp.width, comp.height))
    return tuple(planes)


def _is_chroma(comp) -> bool:
    """A YUV format's U or V component (PyAV's ``is_chroma`` says so only when it is subsampled)."""
    return not comp.is_luma and not comp.is_alpha


def _plane_array(plane, dtype: str):
    """The samples of a frame's plane as a (height, width) view of its buffer (rows padded to line_size)."""
    import numpy as np

    itemsize = np.dtype(dtype).itemsize
    flat = np.frombuffer(plane, dtype=dtype, count=plane.line_size // itemsize * plane.height)
    return flat.reshape(plane.height, plane.line_size // itemsize)[:, :plane.width]


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class VideoInfo:
    """What the filtered video stream is, from its container and its first picture."""

    format: str  # the row of the table of formats: mp4, mov, mkv, webm, avi
    codec: str  # the codec's name (not its decoder's): h264, hevc, vp9, av1, ffv1, prores, mjpeg, ...
    width: int
    height: int
    pix_fmt: str  # as stored
    work_fmt: str  # the planar format the pictures are handed out in
    planes: tuple[Plane, ...]
    rate: Fraction  # average frames per second
    time_base: Fraction
    frames: int | None  # frames the container announces (None: it does not say)
    duration: float | None  # seconds of the video stream, where the container says
    colour: dict  # color_range, color_primaries, color_trc, colorspace: FFmpeg's enum values
    display_matrix: tuple[int, ...] | None  # the rotation and flips a player applies
    rotation: int  # degrees, counter-clockwise, for messages
    sample_aspect_ratio: Fraction | None
    bit_rate: int | None
    profile: str | None


@dataclass
class Picture:
    """One picture of the stream: its planes, its timestamp, and the packets of the copied streams that came with it."""

    planes: list  # numpy arrays, one per plane
    pts: int  # in the stream's time base
    carried: list = field(default_factory=list)  # av.Packet of the other streams, demuxed before this picture


class VideoReader:
    """A video file opened for decoding: its video stream picture by picture, its other streams as packets.

    ``problems`` collects what went wrong while decoding (a corrupt packet
    with its time, a file cut short); with ``fail_fast`` the first of them
    raises :class:`DataError` instead.  ``tail`` holds the packets demuxed
    after the last picture, once :meth:`pictures` is exhausted.
    """

    def __init__(self, source, fmt: str, *, limits, work: str = "stored", fail_fast: bool = False) -> None:
        av = _av()
        self.source, self.fmt, self.work, self.fail_fast, self.limits = source, fmt, work, fail_fast, limits
        self.problems: list[str] = []
        self.decoded = 0
        self.tail: list = []
        self.subject = source.name
        self._fh = source.open() if source.path is None else None
        try:
            self.container = av.open(source.path if source.path is not None else self._fh, "r")
        except av.error.FFmpegError as exc:
            self._close_file()
            raise DataError(f"cannot open the video: {_reason(exc)}", subject=self.subject) from None
        try:
            self.stream = self._video_stream()
            cc = self.stream.codec_context
            if cc.width and cc.height:  # the header's size, refused before a picture is allocated
                limits.check_pixels(cc.width, cc.height, self.subject)
            self.stream.thread_type = "AUTO"
            self._last_pts: int | None = None
            self._in_flight: dict = {}  # pts of the packets sent to the decoder whose picture has not come back
            self._pictures = self._decode_all()
            first = next(self._pictures, None)
            if first is None:
                raise DataError("no picture could be decoded" + (f" ({self.problems[0]})" if self.problems else ""),
                                subject=self.subject)
            self._first = first
            self.info = self._info(first.frame)
            limits.check_pixels(self.info.width, self.info.height, self.subject)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- opening
    def _video_stream(self):
        videos = [s for s in self.container.streams.video if not s.disposition & s.disposition.attached_pic]
        if not videos:
            raise DataError("holds no video stream", subject=self.subject)
        return videos[0]

    def _info(self, frame) -> VideoInfo:
        stream, cc = self.stream, self.stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
        work_fmt = planar_twin(frame.format.name, self.work)
        colour = {}
        for key in ("color_range", "color_primaries", "color_trc", "colorspace"):
            colour[key] = int(getattr(frame, key) or getattr(cc, key) or 0)
        matrix = _display_matrix(frame)
        return VideoInfo(
            format=self.fmt, codec=cc.codec.canonical_name, width=frame.width, height=frame.height,
            pix_fmt=frame.format.name, work_fmt=work_fmt, planes=plane_layout(work_fmt, frame.width, frame.height),
            rate=Fraction(rate), time_base=Fraction(stream.time_base), frames=stream.frames or None,
            duration=_stream_seconds(stream),
            colour=colour, display_matrix=matrix, rotation=int(frame.rotation) if matrix else 0,
            sample_aspect_ratio=cc.sample_aspect_ratio, bit_rate=stream.bit_rate or cc.bit_rate or None,
            profile=stream.profile)

    def use_format(self, work_fmt: str) -> None:
        """Hand the pictures out in the planar format ``work_fmt`` (the output's: yuv444p, gray, ...), converted."""
        from dataclasses import replace

        self.info = replace(self.info, work_fmt=work_fmt,
                            planes=plane_layout(work_fmt, self.info.width, self.info.height))

    @property
    def expected_frames(self) -> int | None:
        """How many pictures the container announces, or its duration suggests (None: unknown)."""
        if self.info.frames:
            return self.info.frames
        if self.info.duration:
            return max(1, round(self.info.duration * self.info.rate))
        return None

    # ----------------------------------------------------------------- decoding
    def pictures(self):
        """Every picture in presentation order, each with the packets of the copied streams demuxed before it."""
        first, self._first = self._first, None
        if first is not None:
            yield self._picture(first)
        for decoded in self._pictures:
            yield self._picture(decoded)
        self._check_length()

    def _picture(self, decoded) -> Picture:
        frame = decoded.frame
        if (frame.width, frame.height) != (self.info.width, self.info.height) or frame.format.name != self.info.pix_fmt:
            self._problem(f"the picture changes to {frame.width}x{frame.height} {frame.format.name} at "
                          f"{self._seconds(decoded.pts):.3f} s", f"scaled back to {self.info.width}x{self.info.height}",
                          fatal=False)
            frame = frame.reformat(self.info.width, self.info.height, self.info.pix_fmt)
        work = self.info.work_fmt
        if frame.format.name != work:
            frame = frame.reformat(format=work, **_source_matrix(frame, work, self.info))
        planes = [_plane_array(p, info.dtype) for p, info in zip(frame.planes, self.info.planes)]
        return Picture(planes, decoded.pts, decoded.carried)

    def _decode_all(self):
        """(frame, pts, carried packets) for every decodable picture; demux problems end the stream."""
        av = _av()
        carried: list = []
        video = self.stream.index
        packets = self.container.demux()
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                self._problem(f"cannot read past {self._seconds(self._last_pts):.3f} s: {_reason(exc)}")
                break
            if packet.stream.index != video:
                if packet.size:  # the demuxer's empty packets only flush decoders
                    carried.append(packet)
                continue
            for frame in self._decode(packet):
                yield _Decoded(frame, self._timestamp(frame), carried)
                carried = []
        for frame in self._decode(None):
            yield _Decoded(frame, self._timestamp(frame), carried)
            carried = []
        self.tail = carried

    def _decode(self, packet):
        """The pictures a packet completes; a packet the decoder refuses is noted with its time and skipped.

        A decoder working on several frames at once reports a bad packet a
        few packets later, so the time reported is that of the oldest packet
        sent whose picture has not come back.
        """
        av = _av()
        if packet is not None and packet.pts is not None:
            self._in_flight[packet.pts] = None
        try:
            frames = self.stream.decode(packet)
        except av.error.EOFError:
            return []  # flushed already: the demuxer's last, empty packet did it
        except av.error.FFmpegError as exc:
            pts = next(iter(self._in_flight), None) if self._in_flight else self._last_pts
            self._in_flight.pop(pts, None)
            self._problem(f"corrupt packet at {self._seconds(pts):.3f} s: {_reason(exc)}", "skipped")
            return []
        for frame in frames:
            self._in_flight.pop(frame.pts, None)
            if frame.is_corrupt:
                self._problem(f"corrupt picture at {self._seconds(frame.pts):.3f} s", "decoded with errors")
        return frames

    def _timestamp(self, frame) -> int:
        """The picture's pts, made strictly increasing (a missing or repeated one follows the last by a frame)."""
        pts = frame.pts
        if self._last_pts is not None and (pts is None or pts <= self._last_pts):
            step = max(1, round(1 / (Fraction(self.stream.average_rate or 25) * Fraction(self.stream.time_base))))
            pts = self._last_pts + step
        pts = 0 if pts is None else pts
        self._last_pts = pts
        self.decoded += 1
        return pts

    def _seconds(self, pts) -> float:
        return float((pts or 0) * Fraction(self.stream.time_base))

    def _problem(self, text: str, outcome: str = "", fatal: bool = True) -> None:
        """Note what went wrong (``outcome``: what was done about it), or fail with it under ``fail_fast``."""
        if self.fail_fast and fatal:
            raise DataError(f"{text} (--fail-fast)", subject=self.subject)
        self.problems.append(f"{text}, {outcome}" if outcome else text)

    def _check_length(self) -> None:
        """Note a clip that ends before its container says it should (a file cut short)."""
        expected = self.expected_frames
        if expected is None or self._last_pts is None:
            return
        if self.info.duration:
            # Times, not counts (an AVI counts a skipped frame, a variable rate makes counts guesses),
            # with a frame and a half to spare.
            start = self.stream.start_time or 0
            end = self._seconds(self._last_pts - start) + float(1 / self.info.rate)
            short = end < self.info.duration - 1.5 / float(self.info.rate)
        else:
            short = self.decoded < expected
        if short:
            self._problem(f"the clip ends early: {self.decoded} of {expected} frames decoded", "cut short or damaged")

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
            self.container = None
        self._close_file()

    def _close_file(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(Exception):
                self._fh.close()
            self._fh = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _Decoded:
    frame: object  # av.VideoFrame
    pts: int
    carried: list


def _display_matrix(frame) -> tuple[int, ...] | None:
    import struct

    for side in frame.side_data:
        if side.type.name == "DISPLAYMATRIX":
            raw = bytes(side)
            if len(raw) >= 36:
                return struct.unpack("<9i", raw[:36])
    return None


def _stream_seconds(stream) -> float | None:
    """The video stream's own duration: its header, else Matroska's DURATION tag (HH:MM:SS.nnnnnnnnn)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    return None


def _source_matrix(frame, target: str, info: VideoInfo) -> dict:
    """What swscale needs to convert a picture from YUV to RGB: its matrix (nothing to rearrange the same samples)."""
    to_rgb = _av().VideoFormat(target).is_rgb and not frame.format.is_rgb
    return _rgb_matrix(info) if to_rgb else {}


def _rgb_matrix(info: VideoInfo) -> dict:
    """The matrix swscale converts with: the clip's own, or BT.709 for unlabelled HD and BT.601 below, as players do."""
    spc = info.colour.get("colorspace", 2)
    known = {1: "itu709", 4: "fcc", 5: "itu601", 6: "itu601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
    return {"src_colorspace": known.get(spc, "itu709" if info.height >= 720 else "itu601")}


def _reason(exc) -> str:
    """FFmpeg's words for an error, without PyAV's errno and file name."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split()).rstrip(":").lower() or type(exc).__name__


def count_frames(source) -> int:
    """The video packets of the stream, counted by demuxing only (no decoding): the frame count of a sound file."""
    av = _av()
    fh = source.open() if source.path is None else None
    try:
        with av.open(source.path if source.path is not None else fh) as container:
            stream = [s for s in container.streams.video if not s.disposition & s.disposition.attached_pic][0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except (av.error.FFmpegError, IndexError) as exc:
        raise DataError(f"cannot count the frames: {_reason(exc)}", subject=source.name) from None
    finally:
        if fh is not None:
            fh.close()


# --------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class Encoding:
    """How pictures are encoded: each field None keeps the input's choice."""

    codec: str | None = None  # --codec: h264, hevc, vp9, av1, ffv1, prores, mjpeg, or an FFmpeg encoder name
    crf: int | None = None  # --crf: constant quality (lower is better)
    bitrate: int | None = None  # --bitrate: bits per second
    pix_fmt: str | None = None  # --pix-fmt: yuv420p, yuv444p, yuv420p10le, ...


def encoder_for(codec: str) -> str:
    """The FFmpeg encoder for a --codec name or a decoder's name; a usage error names the known ones."""
    av = _av()
    name = ENCODERS.get(codec.lower(), codec)
    try:
        found = av.Codec(name, "w")
    except Exception:
        found = None
    if found is None or found.type != "video":
        known = ", ".join(sorted({"h264", "hevc", "vp9", "vp8", "av1", "ffv1", "prores", "mjpeg", "mpeg4"}))
        raise UsageError(f"no video encoder {codec!r}; known: {known}, or an FFmpeg encoder name", subject="--codec")
    return found.name


@dataclass(frozen=True)
class OutputPlan:
    """The video stream a writer makes: encoder, its pixel format and options, picture size, rate."""

    encoder: str
    pix_fmt: str  # what the encoder receives
    work_fmt: str  # what the pictures are built in (planar)
    width: int
    height: int
    rate: Fraction
    time_base: Fraction  # the input's, unless the container or codec counts in frames
    options: dict
    bit_rate: int | None
    notes: tuple[str, ...] = ()


def plan_output(info: VideoInfo, encoding: Encoding, fmt: str, *, width: int, height: int, rate: Fraction,
                work: str = "stored") -> OutputPlan:
    """Decide the encoder, pixel format and quality settings of an output, refusing what cannot work."""
    av = _av()
    notes = []
    holds, usual = _container_codecs(fmt)
    encoder = encoder_for(encoding.codec or info.codec)
    if encoder not in holds:
        if encoding.codec is not None:
            raise UsageError(f"a {fmt} file cannot hold {encoder} video", subject="--codec")
        notes.append(f"a {fmt} file cannot hold {info.codec} video: encoded as {usual}")
        encoder = encoder_for(usual)
    codec = av.Codec(encoder, "w")
    wanted = encoding.pix_fmt or info.pix_fmt
    if encoding.pix_fmt is not None and not _known_format(encoding.pix_fmt):
        raise UsageError(f"unknown pixel format {encoding.pix_fmt!r} (e.g. yuv420p, yuv444p, yuv420p10le, gbrp)",
                         subject="--pix-fmt")
    supported = [f.name for f in (codec.video_formats or [])]
    pix_fmt = wanted
    if supported and wanted not in supported:
        if encoding.pix_fmt is not None:
            raise UsageError(f"{encoder} cannot encode {wanted}; it takes {', '.join(supported)}", subject="--pix-fmt")
        pix_fmt = _nearest_format(wanted, supported)
        notes.append(f"{encoder} cannot encode {wanted}: written as {pix_fmt}")
    options, bit_rate = _quality(encoder, encoding, info)
    if encoder == "prores_ks" and info.profile in PRORES_PROFILES and encoding.codec is None:
        options["profile"] = PRORES_PROFILES[info.profile]
    if encoder == "libx265":
        options["x265-params"] = "log-level=none"  # x265 writes to stderr by itself; errors still fail the encode
    if encoder == "mjpeg" and info.colour.get("color_range") != 2 and not pix_fmt.startswith("yuvj"):
        options["strict"] = "unofficial"  # limited-range JPEG samples, as the input has them, not stretched
    work_fmt = planar_twin(pix_fmt, work)
    _check_even(pix_fmt, width, height, encoder)
    time_base = info.time_base
    if fmt == "avi" or (encoder == "mpeg4" and time_base.denominator > 65535):
        # AVI counts frames (a constant rate), MPEG-4 part 2 cannot count in finer steps than 1/65535 s.
        time_base = 1 / rate.limit_denominator(65535)
    return OutputPlan(encoder, pix_fmt, work_fmt, width, height, rate, time_base, options, bit_rate, tuple(notes))


@functools.lru_cache(maxsize=None)
def _container_codecs(fmt: str) -> tuple[frozenset, str]:
    """The encoders a container of ``fmt`` can hold, and its usual video codec (an empty container in memory says)."""
    import io

    av = _av()
    with av.open(io.BytesIO(), "w", format=MUXERS[fmt]) as container:
        return frozenset(container.supported_codecs), container.default_video_codec


def _quality(encoder: str, encoding: Encoding, info: VideoInfo) -> tuple[dict, int | None]:
    """Encoder options and bit rate for --crf / --bitrate, or the defaults (constant quality, or the input's rate)."""
    if encoding.crf is not None:
        if encoder not in CRF_RANGE:
            why = "it is lossless" if encoder in LOSSLESS else "it has no constant-quality mode; use --bitrate"
            raise UsageError(f"{encoder} takes no --crf ({why})", subject="--crf")
        low, high = CRF_RANGE[encoder]
        if not low <= encoding.crf <= high:
            raise UsageError(f"{encoder} takes a crf from {low} to {high}, not {encoding.crf}", subject="--crf")
    if encoding.bitrate is not None and encoder in LOSSLESS:
        raise UsageError(f"{encoder} is lossless: it takes no --bitrate", subject="--bitrate")
    options: dict = {}
    crf = encoding.crf if encoding.crf is not None else (DEFAULT_CRF.get(encoder) if encoding.bitrate is None else None)
    if crf is not None:
        options["crf"] = str(crf)
        if encoder in ("libvpx-vp9", "libvpx") and encoding.bitrate is None:
            options["b"] = "0"  # constant quality, with no bit rate ceiling
    bit_rate = encoding.bitrate
    if bit_rate is None and crf is None and encoder not in LOSSLESS and not encoder.startswith("prores"):
        bit_rate = info.bit_rate  # mjpeg, mpeg4, vp8: about the input's size
    return options, bit_rate


def _nearest_format(wanted: str, supported: list[str]) -> str:
    """Among an encoder's formats, the one that keeps the most of ``wanted``: same depth and chroma, else the first."""
    av = _av()
    want = av.VideoFormat(wanted, 16, 16)

    def score(name: str) -> tuple:
        fmt = av.VideoFormat(name, 16, 16)
        comps, wcomps = fmt.components, want.components
        same_rgb = fmt.is_rgb == want.is_rgb
        depth = max(c.bits for c in comps) >= max(c.bits for c in wcomps)
        chroma = [(c.width, c.height) for c in comps if c.is_chroma] == [(c.width, c.height) for c in wcomps
                                                                          if c.is_chroma]
        return (same_rgb, depth, chroma, -supported.index(name))

    return max(supported, key=score)


def _check_even(pix_fmt: str, width: int, height: int, encoder: str) -> None:
    fmt = _av().VideoFormat(pix_fmt, 16, 16)
    chroma = [c for c in fmt.components if c.is_chroma]
    if not chroma:
        return
    sx, sy = 16 // chroma[0].width, 16 // chroma[0].height
    if width % sx or height % sy:
        raise UsageError(f"a {width}x{height} picture cannot be encoded as {pix_fmt} (its chroma needs a width "
                         f"divisible by {sx} and a height by {sy}); change the stride or padding, or --pix-fmt "
                         "yuv444p", subject="-o/--output")


class VideoWriter:
    """An output container being written: one encoded video stream, every other stream copied packet for packet."""

    def __init__(self, container, stream, plan: OutputPlan, info: VideoInfo, mapping: dict, work: str) -> None:
        self.container, self.stream, self.plan, self.info = container, stream, plan, info
        self.mapping = mapping  # input stream index -> output stream
        self.work = work
        self.written = 0
        self._last_pts: int | None = None
        self.notes: list[str] = list(plan.notes)
        self.layout = plane_layout(plan.work_fmt, plan.width, plan.height)

    def encode(self, planes, pts: int) -> None:
        """Encode one picture (integer planes laid out as ``plan.work_fmt``) at ``pts`` (in the input's time base)."""
        av = _av()
        frame = av.VideoFrame(self.plan.width, self.plan.height, self.plan.work_fmt)
        for target, samples, layout in zip(frame.planes, planes, self.layout):
            _plane_array(target, layout.dtype)[...] = samples
        for key, value in self.info.colour.items():
            setattr(frame, key, value)
        if self.plan.pix_fmt != self.plan.work_fmt:
            frame = frame.reformat(format=self.plan.pix_fmt, **self._to_stored())
        if self.plan.time_base != self.info.time_base:
            pts = round(pts * self.info.time_base / self.plan.time_base)
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1  # a frame count needs one step per frame
            self._last_pts = pts
        frame.pts = pts
        frame.time_base = self.plan.time_base
        self.container.mux(self.stream.encode(frame))
        self.written += 1

    def _to_stored(self) -> dict:
        if self.work != "rgb":
            return {}
        spc = _rgb_matrix(self.info)["src_colorspace"]
        return {"dst_colorspace": spc, "dst_color_range": self.info.colour.get("color_range") or 1}

    def copy(self, packets) -> None:
        """Copy packets of the other streams, unchanged, into their output streams."""
        for packet in packets:
            target = self.mapping.get(packet.stream.index)
            if target is not None:
                packet.stream = target
                self.container.mux(packet)

    def finish(self) -> None:
        """Drain the encoder and write the container's index."""
        self.container.mux(self.stream.encode(None))
        self.container.close()


@contextlib.contextmanager
def open_writer(dest: str, reader: VideoReader, plan: OutputPlan, fmt: str, *, work: str = "stored"):
    """A :class:`VideoWriter` onto a temporary file beside ``dest``, renamed onto it when the block succeeds."""
    from .files import atomic_path

    av = _av()
    with atomic_path(dest, suffix=f".{fmt}") as tmp:
        try:
            container = av.open(tmp, "w", format=MUXERS[fmt])
        except av.error.FFmpegError as exc:
            raise OutputError(f"cannot write a {fmt} file: {_reason(exc)}", subject=dest) from None
        writer = None
        try:
            writer = _start(container, reader, plan, fmt, dest, work)
            yield writer
            writer.finish()
        except av.error.FFmpegError as exc:
            raise OutputError(f"cannot encode the video: {_reason(exc)}", subject=dest) from None
        finally:
            with contextlib.suppress(Exception):
                container.close()


def _start(container, reader: VideoReader, plan: OutputPlan, fmt: str, dest: str, work: str) -> VideoWriter:
    """Add the encoded stream and the copied ones in the input's order, with the metadata, then write the header."""
    info = reader.info
    container.metadata.update({k: v for k, v in reader.container.metadata.items() if k.lower() != "encoder"})
    mapping, video, notes = {}, None, []
    for source in reader.container.streams:
        if source.index == reader.stream.index:
            video = _video_stream(container, plan, info, source, fmt, dest)
            continue
        copied = _copy_stream(container, source, fmt)
        if copied is None:
            codec = source.codec_context.name if source.codec_context else "?"
            notes.append(f"stream #{source.index} ({source.type}, {codec}) cannot be stored in {fmt} and was left out")
        elif copied is not True:
            mapping[source.index] = copied
    with contextlib.suppress(Exception):
        chapters = reader.container.chapters()
        if chapters:
            container.set_chapters(chapters)
    try:
        container.start_encoding()
    except (_av().error.FFmpegError, ValueError) as exc:
        raise OutputError(f"cannot start the {plan.encoder} encoder: {_reason(exc)}", subject=dest) from None
    writer = VideoWriter(container, video, plan, info, mapping, work)
    writer.notes.extend(notes)
    return writer


def _video_stream(container, plan: OutputPlan, info: VideoInfo, source, fmt: str, dest: str):
    try:
        stream = container.add_stream(plan.encoder, rate=plan.rate, options=plan.options)
    except ValueError as exc:
        raise UsageError(f"a {fmt} file cannot hold {plan.encoder} video ({_reason(exc)})", subject="--codec") from None
    stream.width, stream.height, stream.pix_fmt = plan.width, plan.height, plan.pix_fmt
    cc = stream.codec_context
    stream.time_base = plan.time_base
    cc.time_base = plan.time_base
    cc.framerate = plan.rate
    for key, value in info.colour.items():
        setattr(cc, key, value)
    if info.sample_aspect_ratio:
        cc.sample_aspect_ratio = info.sample_aspect_ratio
    if plan.bit_rate:
        cc.bit_rate = int(plan.bit_rate)
    cc.thread_count = 0
    if info.display_matrix:
        stream.set_display_matrix(list(info.display_matrix))
    stream.metadata.update({k: v for k, v in source.metadata.items() if k.upper() not in ("DURATION", "ENCODER")})
    with contextlib.suppress(Exception):
        stream.disposition = source.disposition
    return stream


def _copy_stream(container, source, fmt: str):
    """The output stream a copied stream's packets go to; True for an attachment (no packets); None if refused."""
    try:
        if source.type == "attachment":
            container.add_attachment(source.metadata.get("filename", f"attachment{source.index}"),
                                     source.mimetype or "application/octet-stream", source.data)
            return True
        target = container.add_stream_from_template(source)
    except (ValueError, TypeError, _av().error.FFmpegError):
        return None
    target.metadata.update({k: v for k, v in source.metadata.items() if k.upper() not in ("DURATION", "ENCODER")})
    with contextlib.suppress(Exception):
        target.disposition = source.disposition
    return target


# --------------------------------------------------------------------------- the table's reader and writer
def read_video(source, fmt: str, *, limits, kind=None, key=None, auto_orient=True, stream=False):
    """Reader for the table: a whole clip as (frames, height, width, 3) RGB samples, within the memory budget."""
    import numpy as np

    from .signal import Signal

    if kind not in (None, "image"):
        raise UsageError(f"a video cannot be read as {kind} (its frames are images)", subject="--kind")
    with VideoReader(source, fmt, limits=limits) as reader:
        info = reader.info
        expected = reader.expected_frames or 1
        limits.check_samples((expected, info.height, info.width, 3), 1, source.name)
        frames = []
        for picture in reader.pictures():
            if len(frames) >= expected:  # more than the container said: count again as they come
                limits.check_samples((len(frames) + 1, info.height, info.width, 3), 1, source.name)
            frames.append(picture_rgb(picture, info))
        meta = {"format": fmt, "dtype": "uint8", "mode": "RGB", "frame_rate": float(info.rate)}
    return Signal(data=np.stack(frames), kind="image", channel_axis=-1, frames=True, meta=meta)


def picture_rgb(picture: Picture, info: VideoInfo, *, upright: bool = False):
    """A picture as (height, width, 3) 8-bit RGB, with the clip's matrix and range; ``upright`` applies its rotation."""
    import numpy as np

    av = _av()
    frame = av.VideoFrame(info.width, info.height, info.work_fmt)
    for target, samples, plane in zip(frame.planes, picture.planes, info.planes):
        _plane_array(target, plane.dtype)[...] = samples
    for key, value in info.colour.items():
        setattr(frame, key, value)
    rgb = frame.reformat(format="rgb24", **_source_matrix(frame, "rgb24", info)).to_ndarray()
    if upright and info.rotation % 90 == 0 and info.rotation % 360:
        rgb = np.ascontiguousarray(np.rot90(rgb, info.rotation // 90))  # counter-clockwise, as the rotation is
    return rgb


def write_video(sig, dest: str, fmt: str, *, compress_level=None, range_mode: str = "clip", depth=None,
                quality=None):
    """Writer for the table: frames of grey or RGB samples (``Signal.frames``) in the container's usual codec.

    The frames are encoded at 8 bits (``depth`` may only ask for that);
    ``quality`` is a picture format's, not a codec's, and is noted as ignored.
    """
    import numpy as np

    from .files import atomic_path
    from .samples import to_samples
    from .signal import Written

    av = _av()
    data = np.asarray(sig.data)
    if not sig.frames or sig.spatial_ndim != 2 or (data.ndim == 4 and data.shape[-1] not in (1, 3, 4)):
        raise OutputError("only frames of pictures (a video or an animation) can be written as video", subject=dest)
    if depth not in (None, "8"):
        raise OutputError(f"a video is written here at 8 bits, not --depth {depth}", subject=dest)
    frames, clipped = to_samples(data, np.uint8, range_mode)
    height, width = frames.shape[1:3]
    encoder = "libvpx-vp9" if fmt == "webm" else "libx264"
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    rate = Fraction(sig.meta.get("frame_rate") or 25).limit_denominator(1001)
    try:
        with atomic_path(dest, suffix=f".{fmt}") as tmp, \
                contextlib.closing(av.open(tmp, "w", format=MUXERS[fmt])) as out:
            stream = out.add_stream(encoder, rate=rate, options={"crf": str(DEFAULT_CRF[encoder])})
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            stream.codec_context.colorspace = 1  # BT.709: how the RGB samples are converted, said in the stream
            for i, samples in enumerate(frames):
                rgb = samples if samples.ndim == 3 and samples.shape[-1] >= 3 else np.repeat(
                    samples.reshape(height, width, 1), 3, axis=-1)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[..., :3]), format="rgb24")
                frame = frame.reformat(format=pix_fmt, dst_colorspace="itu709")
                frame.pts = i
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    except av.error.FFmpegError as exc:
        raise OutputError(f"cannot encode the video: {_reason(exc)}", subject=dest) from None
    except ConvcliError:
        raise
    return Written(path=dest, format=fmt, clipped=clipped)
