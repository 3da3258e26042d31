"""Audio through soundfile (libsndfile): WAV, FLAC, Ogg/Vorbis, AIFF and the rest, subtype and rate kept.

Integer PCM is read as integers of its own precision: 8- and 16-bit in int16,
24- and 32-bit in int32, with ``meta["bits"]`` saying how many bits are
significant (a 24-bit sample of full scale is 2**23, not 2**31).  Float
subtypes are read as float32/float64 in [-1, 1].  Mono is a 1-D array, more
channels are (frames, channels) with the channel axis last.

On writing, values are brought from the input's full scale to the output
subtype's and converted by :func:`convcli.samples.to_samples`, so integer
subtypes are clipped (and counted) instead of wrapped: clipped audio is
audible distortion, so the CLI warns with the count.
"""
from __future__ import annotations

import contextlib

from ..errors import ConvcliError, DataError, OutputError, UsageError

SF_FORMAT = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "aiff": "AIFF", "au": "AU", "caf": "CAF",
             "w64": "W64", "mp3": "MP3"}

# subtype -> (container dtype, significant bits); None bits = float in [-1, 1].
SUBTYPE_SAMPLES = {
    "PCM_S8": ("int16", 8), "PCM_U8": ("int16", 8), "PCM_16": ("int16", 16), "PCM_24": ("int32", 24),
    "PCM_32": ("int32", 32), "FLOAT": ("float32", None), "DOUBLE": ("float64", None),
    "ULAW": ("int16", 16), "ALAW": ("int16", 16), "IMA_ADPCM": ("int16", 16), "MS_ADPCM": ("int16", 16),
    "DWVW_16": ("int16", 16), "DWVW_24": ("int32", 24), "DPCM_8": ("int16", 8), "DPCM_16": ("int16", 16),
    "NMS_ADPCM_16": ("int16", 16), "NMS_ADPCM_24": ("int16", 16), "NMS_ADPCM_32": ("int16", 16),
}
# Bytes per sample of uncompressed subtypes: bounds the frame count by the file size.
_RAW_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
              "ULAW": 1, "ALAW": 1}
MAX_CHANNELS = 256


def _samples_of(subtype: str):
    return SUBTYPE_SAMPLES.get(subtype, ("float32", None))  # lossy codecs decode to float


def _full_scale(bits):
    """The value of a full-scale sample: 2**(bits-1) for integers, 1.0 for floats."""
    return 1.0 if bits is None else float(1 << (bits - 1))


def read_audio(source, fmt: str, *, limits, kind=None, key=None, auto_orient=True, stream=False):
    """Reader for every format libsndfile decodes."""
    import numpy as np
    import soundfile as sf

    from .signal import Signal

    if kind not in (None, "audio", "signal"):
        raise UsageError(f"an audio file cannot be read as {kind}", subject="--kind")
    subject = source.name
    try:
        with source.open() as fh, sf.SoundFile(fh) as snd:
            rate, channels, subtype, frames = snd.samplerate, snd.channels, snd.subtype, snd.frames
            if not rate or rate <= 0:
                raise DataError(f"impossible sample rate {rate}", subject=subject)
            if not 1 <= channels <= MAX_CHANNELS:
                raise DataError(f"impossible channel count {channels} (1..{MAX_CHANNELS} supported)", subject=subject)
            if subtype in _RAW_BYTES and snd.format in ("WAV", "WAVEX", "AIFF", "RF64", "W64", "AU", "CAF"):
                # A lying header must not make us allocate: at most as many
                # frames as the bytes present can hold.
                frames = min(frames, source.size // (channels * _RAW_BYTES[subtype]))
            if frames <= 0:
                raise DataError("no audio samples (0 frames)", subject=subject)
            dtype, bits = _samples_of(subtype)
            limits.check_samples((frames, channels), np.dtype(dtype).itemsize, subject)
            trusted = subtype in _RAW_BYTES and snd.format in ("WAV", "WAVEX", "AIFF", "RF64", "W64", "AU", "CAF")
            data = snd.read(frames=frames, dtype=dtype, always_2d=True) if trusted else _read_blocks(
                snd, frames, dtype)
            meta = {"format": fmt, "sf_format": snd.format, "subtype": subtype, "endian": snd.endian,
                    "dtype": dtype, "bits": bits}
    except DataError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
        # libsndfile's own words, without soundfile's "Error opening <file object>:" prefix.
        text = getattr(exc, "error_string", None) or str(exc).split(": ", 1)[-1]
        text = " ".join(str(text).split()) or type(exc).__name__
        raise DataError(f"cannot decode the audio: {text}", subject=subject) from None
    if len(data) == 0:
        raise DataError("no audio samples (0 frames)", subject=subject)
    if bits is not None and bits < np.iinfo(data.dtype).bits:
        # libsndfile scales every integer type to the container's full range;
        # shift back to the stored precision (exact: the low bits are zero).
        data >>= np.iinfo(data.dtype).bits - bits
    if data.shape[1] == 1:
        data = data[:, 0]
    data = np.ascontiguousarray(data)
    return Signal(data=data, kind=kind or "audio", channel_axis=None if data.ndim == 1 else -1,
                  sample_rate=float(rate), meta=meta)


def _read_blocks(snd, frames: int, dtype):
    """Read a compressed stream block by block: its header's frame count may lie, the decoded samples cannot."""
    import numpy as np

    blocks, left = [], frames
    while left > 0:
        block = snd.read(frames=min(left, 1 << 20), dtype=dtype, always_2d=True)
        if len(block) == 0:
            break
        blocks.append(block)
        left -= len(block)
    if not blocks:
        return np.zeros((0, snd.channels), dtype=dtype)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def write_audio(sig, dest: str, fmt: str, *, compress_level=None, range_mode: str = "clip", depth=None,
                quality=None):
    """Writer for audio: rate, channels and subtype kept (or the format's nearest), integers clipped.

    `depth` asks for another subtype (``--depth 24``: PCM_24); values keep
    their loudness, brought from the input's full scale to the output's.
    """
    import numpy as np
    import soundfile as sf

    from .files import atomic_path
    from .signal import Written

    if sig.spatial_ndim != 1:
        raise OutputError(f"a {sig.spatial_ndim}-D {sig.kind} cannot be written as audio; use .npy", subject=dest)
    if not sig.sample_rate or sig.sample_rate <= 0:
        raise OutputError("audio needs a sample rate and this signal has none (read it from an audio file)",
                          subject=dest)
    notes: list[str] = []
    data = np.asarray(sig.data)
    if data.ndim == 2 and data.shape[1] > MAX_CHANNELS:
        raise OutputError(f"{data.shape[1]} channels is more than audio formats hold", subject=dest)
    sf_format = SF_FORMAT[fmt]
    if sig.meta.get("sf_format") in ("WAVEX", "RF64") and fmt == "wav":
        sf_format = sig.meta["sf_format"]
    subtype = sig.meta.get("subtype")
    if depth is not None:
        subtype = _depth_subtype(depth, fmt, notes)
    if subtype is None or not sf.check_format(sf_format, subtype):
        wanted = subtype
        subtype = _nearest_subtype(sf_format, np.dtype(sig.meta.get("dtype") or data.dtype), sig.meta.get("bits"))
        if wanted is not None:
            notes.append(f"{fmt.upper()} cannot store {wanted} samples: written as {subtype}")
    rate = int(round(sig.sample_rate))
    if rate != sig.sample_rate:
        notes.append(f"sample rate {sig.sample_rate:g} Hz rounded to {rate} Hz")
    in_bits = sig.meta.get("bits") if sig.meta.get("dtype") else _bits_of(data.dtype)
    out_dtype, out_bits = _samples_of(subtype)
    convert = _Converter(data, out_dtype, out_bits, subtype, range_mode, _full_scale(out_bits) / _full_scale(in_bits))
    options = {}
    if compress_level is not None and fmt == "flac":
        options["compression_level"] = int(compress_level) / 9.0
    endian = sig.meta.get("endian", "FILE")
    channels = 1 if data.ndim == 1 else data.shape[1]
    try:
        with atomic_path(dest, suffix=f".{fmt}") as tmp, open_sink(tmp) as sink:
            try:
                with sf.SoundFile(sink, "w", rate, channels, subtype,
                                  endian if endian in ("FILE", "LITTLE", "BIG", "CPU") else "FILE", sf_format,
                                  **options) as snd:
                    for samples in convert.blocks():
                        snd.write(samples)
            finally:
                sink.raise_error()  # the disk's own words (OSError: atomic_path names the output)
    except ConvcliError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise OutputError(f"cannot write {fmt.upper()} audio: {exc}", subject=dest) from None
    return Written(path=dest, format=fmt, clipped=convert.clipped, notes=notes)


# Frames converted and written at a time: the block's samples, and libsndfile's
# copy of them, stay in cache, and no output-sized sample array is made
# (180 s of 16-bit stereo: 20-40 ms less than converting it whole, then writing).
WRITE_FRAMES = 1 << 16


class _Converter:
    """Float results to the output subtype's samples by :func:`convcli.samples.to_samples`, block by block.

    Values are brought from the input's full scale to the output's first
    (24-bit in, 16-bit out: divided by 256).  ``rescale`` needs the whole
    signal's range, so it converts in one block.
    """

    def __init__(self, data, out_dtype, out_bits, subtype: str, mode: str, scale: float):
        self.data, self.out_dtype, self.out_bits, self.subtype = data, out_dtype, out_bits, subtype
        self.mode, self.scale = mode, scale
        self.clipped = 0

    def blocks(self):
        step = len(self.data) if self.mode == "rescale" else WRITE_FRAMES
        for start in range(0, max(len(self.data), 1), max(step, 1)):
            try:
                yield self.convert(self.data[start:start + step])
            except DataError:
                if step >= len(self.data):
                    raise
                self.convert(self.data)  # counts the whole signal's non-finite samples in its error
                raise

    def convert(self, part):
        import numpy as np

        from .samples import to_samples

        values = part if self.scale == 1.0 else part.astype(np.float64) * self.scale
        samples, clipped = to_samples(values, self.out_dtype, self.mode, bits=self.out_bits)
        if self.out_bits is not None and self.out_bits < np.iinfo(samples.dtype).bits:
            samples = samples << (np.iinfo(samples.dtype).bits - self.out_bits)  # libsndfile's full scale
        if self.out_bits is None and self.subtype not in ("FLOAT", "DOUBLE"):
            # Lossy encoders take floats in [-1, 1] and clip silently: clip and count here.
            over = int(np.count_nonzero(np.abs(samples) > 1.0))
            if over:
                samples = np.clip(samples, -1.0, 1.0)
                clipped += over
        self.clipped += clipped
        return samples


class Sink:
    """The output file as libsndfile's virtual I/O: no fsync, and errors kept for the caller.

    Given a path, libsndfile ends every file with an ``fsync`` (32 MB of
    WAV: +8-30 ms here, more on a busy disk) that no other writer of convcli
    or SoX pays; through a file object it writes the same bytes without it.
    An exception inside a C callback would print a traceback and be lost,
    so a failed write or seek is recorded, reported to libsndfile as
    nothing done, and raised by :meth:`raise_error` afterwards.
    """

    def __init__(self, fh):
        self._fh = fh
        self._error: OSError | None = None

    def _guarded(self, call, failed):
        if self._error is not None:
            return failed
        try:
            return call()
        except OSError as exc:
            self._error = exc
            return failed

    def write(self, data) -> int:
        written = self._guarded(lambda: self._fh.write(data), 0)
        return len(data) if written is None else written

    def read(self, size: int = -1) -> bytes:
        return self._guarded(lambda: self._fh.read(size), b"")

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._guarded(lambda: self._fh.seek(offset, whence), -1)

    def tell(self) -> int:
        return self._guarded(self._fh.tell, -1)

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error


@contextlib.contextmanager
def open_sink(path: str):
    """Open ``path`` for writing as a :class:`Sink`; a write error recorded inside is raised on closing."""
    with open_output(path) as fh:
        sink = Sink(fh)
        yield sink
    sink.raise_error()


def open_output(path: str):
    """The binary file a writer fills (a seam for tests that fill the disk)."""
    return open(path, "w+b")


def _bits_of(dtype):
    import numpy as np

    if dtype.kind in "iu":
        return np.iinfo(dtype).bits
    return None


# --depth -> the subtype asked for (8 bits: unsigned in WAV, as WAV stores 8-bit PCM).
DEPTH_SUBTYPES = {"8": "PCM_S8", "16": "PCM_16", "24": "PCM_24", "32": "PCM_32", "32f": "FLOAT", "64f": "DOUBLE"}


def _depth_subtype(depth: str, fmt: str, notes: list[str]) -> str:
    if depth == "1":
        notes.append("--depth 1 (bilevel) is for images: audio written as PCM_16")
        return "PCM_16"
    return "PCM_U8" if depth == "8" and fmt == "wav" else DEPTH_SUBTYPES[depth]


def _nearest_subtype(sf_format: str, dtype, bits) -> str:
    import soundfile as sf

    if dtype.kind == "f" or bits is None:
        order = ["DOUBLE", "FLOAT"] if dtype.itemsize >= 8 else ["FLOAT", "DOUBLE"]
        order += ["PCM_24", "PCM_16", "VORBIS", "OPUS", "MPEG_LAYER_III"]
    elif bits > 24:
        order = ["PCM_32", "PCM_24", "FLOAT", "PCM_16", "VORBIS", "OPUS", "MPEG_LAYER_III"]
    elif bits > 16:
        order = ["PCM_24", "PCM_32", "FLOAT", "PCM_16", "VORBIS", "OPUS", "MPEG_LAYER_III"]
    elif bits > 8:
        order = ["PCM_16", "PCM_24", "FLOAT", "VORBIS", "OPUS", "MPEG_LAYER_III"]
    else:
        order = ["PCM_U8", "PCM_S8", "PCM_16", "VORBIS", "OPUS", "MPEG_LAYER_III"]
    for subtype in order:
        if sf.check_format(sf_format, subtype):
            return subtype
    return sf.default_subtype(sf_format)
