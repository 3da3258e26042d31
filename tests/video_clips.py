"""Small video clips made in the tests with PyAV, and what the tests read back from them with PyAV alone.

The clips are a few dozen frames of seeded noise (lossless FFV1, or x264 at
quantiser 0), so decoded samples can be compared exactly.  Reading back goes
straight through PyAV, never through convcli's reader: the oracle must not
share the code it checks.
"""
from __future__ import annotations

import hashlib
from fractions import Fraction

import numpy as np

av = __import__("pytest").importorskip("av")

BT709 = {"color_primaries": 1, "color_trc": 1, "colorspace": 1, "color_range": 1}


def make_clip(path, *, codec="ffv1", pix_fmt="yuv420p", frames=24, size=(64, 48), rate=25, audio=False,
              subtitles=False, container=None, options=None, rotation=None, colour=BT709, pts=None, seed=0,
              corrupt=None, smooth=False):
    """Write a clip of seeded noise; return its pictures as decoded from the file (lists of planes per frame).

    ``subtitles`` adds a SubRip stream of a few lines; ``pts`` gives every
    frame's timestamp in milliseconds (a variable frame rate, written with a
    1/1000 time base); ``corrupt`` the index of a
    packet whose bytes are replaced by noise; ``smooth`` makes the pictures
    gradients instead of noise (they compress to little with lossy codecs).
    """
    rng = np.random.default_rng(seed)
    width, height = size
    out = av.open(str(path), "w", format=container)
    stream = out.add_stream(codec, rate=rate, options=options or {})
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if pts is not None:
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
    for key, value in colour.items():
        setattr(stream.codec_context, key, value)
    if rotation is not None:
        stream.set_display_rotation(rotation)
    sound = out.add_stream("aac", rate=48000) if audio else None
    text = out.add_mux_stream("subrip") if subtitles else None
    if text is not None:
        text.time_base = Fraction(1, 1000)
    count = [0]

    def mux(packets):
        for packet in packets:
            if corrupt is not None and count[0] == corrupt:
                packet = _noise_packet(packet, rng)
            out.mux(packet)
            count[0] += 1

    for i in range(frames):
        frame = _frame(rng, width, height, pix_fmt, i, smooth)
        frame.pts = i if pts is None else pts[i]
        if pts is not None:
            frame.time_base = Fraction(1, 1000)
        mux(stream.encode(frame))
        if text is not None and i % 4 == 0:
            line = av.Packet(f"line {i}".encode())
            line.stream, line.time_base, line.duration = text, Fraction(1, 1000), 100
            line.pts = line.dts = i * 40
            out.mux(line)
    mux(stream.encode(None))
    if sound is not None:
        for i in range(frames * 2):
            samples = (np.sin(np.arange(1024) * (i + 1) / 50.0) * 0.2).astype(np.float32)[None]
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, i * 1024
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    out.close()
    return read_planes(path)


def _frame(rng, width, height, pix_fmt, i, smooth):
    frame = av.VideoFrame(width, height, pix_fmt)
    for k, plane in enumerate(frame.planes):
        view = plane_view(plane, np.uint16 if "10" in pix_fmt or "16" in pix_fmt else np.uint8)
        top = 1023 if "10" in pix_fmt else 255
        if smooth:  # ramps well inside the colours RGB can show: luma 60..199, chroma near neutral
            y, x = np.mgrid[: view.shape[0], : view.shape[1]]
            ramp = 60 + (x * 3 + y * 2 + i * 5) % 140 if k == 0 else 112 + (x + y + i) % 32
            view[...] = (ramp * (top + 1) // 256).astype(view.dtype)
        else:
            view[...] = rng.integers(0, top + 1, view.shape, dtype=view.dtype)
    return frame


def _noise_packet(packet, rng):
    noise = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
    noise.pts, noise.dts, noise.time_base, noise.stream = packet.pts, packet.dts, packet.time_base, packet.stream
    noise.is_keyframe = packet.is_keyframe
    return noise


def plane_view(plane, dtype=np.uint8):
    itemsize = np.dtype(dtype).itemsize
    flat = np.frombuffer(memoryview(plane), dtype=dtype)
    return flat[: plane.line_size // itemsize * plane.height].reshape(plane.height, -1)[:, :plane.width]


def read_planes(path):
    """Every decoded picture of the first video stream as a list of planes (copies)."""
    pictures = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue  # a corrupt packet made on purpose: its picture is missing
            for f in frames:
                wide = any(c.bits > 8 for c in f.format.components)
                pictures.append([plane_view(p, np.uint16 if wide else np.uint8).copy() for p in f.planes])
    return pictures


def volume(pictures, k: int) -> np.ndarray:
    """Plane ``k`` of every picture stacked: the (t, y, x) volume of that plane."""
    return np.stack([p[k] for p in pictures])


def stream_facts(path) -> dict:
    """What a player reads from the first video stream: codec, format, rate, time base, colour, rotation, timestamps."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        cc = stream.codec_context
        frames = list(container.decode(stream))
        return {
            "codec": cc.codec.canonical_name, "pix_fmt": frames[0].format.name,
            "size": (frames[0].width, frames[0].height),
            "rate": stream.average_rate, "time_base": stream.time_base, "frames": len(frames),
            "pts": [f.pts for f in frames], "rotation": frames[0].rotation,
            "colour": {key: getattr(frames[0], key) or getattr(cc, key) for key in BT709},
            "streams": [s.type for s in container.streams],
        }


def packet_digests(path, kind: str = "audio") -> list[tuple]:
    """(pts, dts, duration, sha1 of the bytes) of every packet of the first stream of ``kind``."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [(p.pts, p.dts, p.duration, hashlib.sha1(bytes(p)).hexdigest())
                for p in container.demux(stream) if p.size]


def oracle(planes: np.ndarray, weights, *, chroma: bool = False, mode: str = "clip", bits: int = 8, **geometry):
    """convcli's promise for one plane, computed whole: correlate the (t, y, x) volume; chroma about neutral grey."""
    from convcli.engine import correlate
    from convcli.io.samples import to_samples

    neutral = 1 << (bits - 1) if chroma else 0
    values = correlate(planes.astype(np.float64) - neutral, weights, precision="float64", **geometry) + neutral
    dtype = np.uint8 if bits <= 8 else np.uint16
    return to_samples(values, dtype, "clip" if chroma else mode, bits=bits)[0], values


def agree(got: np.ndarray, expected: np.ndarray, exact_values: np.ndarray) -> None:
    """``got`` equals ``expected``, but for off-by-one where the exact value is within 1e-3 of a rounding tie."""
    assert got.shape == expected.shape
    diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    ties = np.abs(exact_values - np.floor(exact_values) - 0.5) < 1e-3
    assert diff.max(initial=0) <= 1 and not np.any(diff[~ties]), (
        f"{int((diff > 0).sum())} samples differ, {int(((diff > 0) & ~ties).sum())} away from a rounding tie")


def make_photo_clip(path, rgb: np.ndarray, *, frames=6, rotation=None, rate=25):
    """A lossless clip (FFV1, yuv444p, unlabelled colour) whose every frame is the RGB picture ``rgb``."""
    out = av.open(str(path), "w")
    stream = out.add_stream("ffv1", rate=rate)
    stream.height, stream.width = rgb.shape[:2]
    stream.pix_fmt = "yuv444p"
    if rotation is not None:
        stream.set_display_rotation(rotation)
    picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv444p")
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(picture.to_ndarray(), format="yuv444p")
        frame.pts = i
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()
