"""Audio through soundfile (libsndfile): WAV, FLAC, Ogg/Vorbis, AIFF and the rest, subtype and rate kept.

Integer PCM is read as integers of its own precision: 8- and 16-bit in int16,
24- and 32-bit in int32, with ``meta["bits"]`` saying how many bits are
significant (a 24-bit sample of full scale is 2**23, not 2**31).  Float
subtypes are read as float32/float64 in [-1, 1].  Mono is a 1-D array, more
channels are (frames, channels) with the channel axis last.

On writing, the input's container (WAVEX, RF64), subtype and byte order are
kept where the output format holds them, else the nearest that libsndfile
writes, with a note (lossy codecs become 16-bit PCM).  Values are brought
from the input's full scale to the output subtype's and converted by
:func:`convcli.samples.to_samples`, so integer subtypes are clipped (and
counted) instead of wrapped: clipped audio is audible distortion, so the CLI
warns with the count.  A file cut short is read as far as it goes and says so
(``meta["short_read"]``).
"""
from __future__ import annotations

import contextlib
import functools

from ..errors import ConvcliError, DataError, FormatMismatch, OutputError, UsageError

SF_FORMAT = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "opus": "OGG", "aiff": "AIFF", "au": "AU", "caf": "CAF",
             "w64": "W64", "mp3": "MP3"}
# Formats whose name promises one codec: an .opus file holds Opus, whatever Ogg could hold.
CODEC_OF = {"opus": "OPUS"}

# subtype -> (container dtype, significant bits); None bits = float in [-1, 1].
SUBTYPE_SAMPLES = {
    "PCM_S8": ("int16", 8), "PCM_U8": ("int16", 8), "PCM_16": ("int16", 16), "PCM_24": ("int32", 24),
    "PCM_32": ("int32", 32), "FLOAT": ("float32", None), "DOUBLE": ("float64", None),
    "ULAW": ("int16", 16), "ALAW": ("int16", 16), "IMA_ADPCM": ("int16", 16), "MS_ADPCM": ("int16", 16),
    "DWVW_16": ("int16", 16), "DWVW_24": ("int32", 24), "DPCM_8": ("int16", 8), "DPCM_16": ("int16", 16),
    "NMS_ADPCM_16": ("int16", 16), "NMS_ADPCM_24": ("int16", 16), "NMS_ADPCM_32": ("int16", 16),
    "GSM610": ("int16", 16), "G721_32": ("int16", 16), "G723_24": ("int16", 16), "G723_40": ("int16", 16),
    "VOX_ADPCM": ("int16", 16), "DWVW_12": ("int16", 16),
    "ALAC_16": ("int16", 16), "ALAC_20": ("int32", 20), "ALAC_24": ("int32", 24), "ALAC_32": ("int32", 32),
}
# Anything else (Vorbis, Opus, MPEG layers I-III) is a lossy codec, decoded to floats.

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
    """Reader for every format libsndfile decodes.

    A file holding fewer frames than its header declares (cut short) is read
    as far as it goes, and ``meta["short_read"]`` gives both counts.
    """
    import numpy as np
    import soundfile as sf

    from .signal import Signal

    if kind not in (None, "audio", "signal"):
        raise UsageError(f"an audio file cannot be read as {kind}", subject="--kind")
    subject = source.name
    try:
        with _quiet_decoder(fmt), source.open() as fh, sf.SoundFile(fh) as snd:
            rate, channels, subtype, frames = snd.samplerate, snd.channels, snd.subtype, snd.frames
            if not rate or rate <= 0:
                raise DataError(f"impossible sample rate {rate}", subject=subject)
            if not 1 <= channels <= MAX_CHANNELS:
                raise DataError(f"impossible channel count {channels} (1..{MAX_CHANNELS} supported)", subject=subject)
            raw = subtype in _RAW_BYTES and snd.format in _RAW_CONTAINERS
            if raw:
                # A lying header must not make us allocate: at most as many
                # frames as the bytes present can hold.
                frames = min(frames, source.size // (channels * _RAW_BYTES[subtype]))
            if frames <= 0:
                raise DataError("no audio samples (0 frames)", subject=subject)
            dtype, bits = _samples_of(subtype)
            limits.check_samples((frames, channels), np.dtype(dtype).itemsize, subject)
            if raw:
                data, stopped = snd.read(frames=frames, dtype=dtype, always_2d=True), False
            else:
                data, stopped = _read_blocks(snd, frames, dtype)
            reported = snd.frames
            meta = {"format": fmt, "sf_format": snd.format, "subtype": subtype, "endian": snd.endian,
                    "dtype": dtype, "bits": bits}
    except DataError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot decode the audio: {_libsndfile_words(exc)}", subject=subject) from None
    if len(data) == 0:
        raise DataError("no audio samples (0 frames)", subject=subject)
    declared = _declared_frames(source, meta, channels, reported, stopped)
    if declared is not None and len(data) < declared:
        meta["short_read"] = (len(data), declared)
    if bits is not None and bits < np.iinfo(data.dtype).bits:
        # libsndfile scales every integer type to the container's full range;
        # shift back to the stored precision (exact: the low bits are zero).
        data >>= np.iinfo(data.dtype).bits - bits
    if data.shape[1] == 1:
        data = data[:, 0]
    data = np.ascontiguousarray(data)
    return Signal(data=data, kind=kind or "audio", channel_axis=None if data.ndim == 1 else -1,
                  sample_rate=float(rate), meta=meta)


# Containers whose PCM samples are stored as they are: their size is known from the bytes.
_RAW_CONTAINERS = ("WAV", "WAVEX", "AIFF", "RF64", "W64", "AU", "CAF")


def _declared_frames(source, meta: dict, channels: int, reported: int, stopped: bool) -> int | None:
    """The frame count the file's header declares, where it declares one that can be believed.

    libsndfile reports a PCM file's count already shortened to the bytes
    present, so that count is read from the header itself; a compressed
    stream's is the one libsndfile reports (FLAC's STREAMINFO, Ogg's last
    granule, an MP3's Xing header; without one, an estimate from the bit
    rate, believed only when decoding failed).
    """
    from .audio_headers import declared_frames, mp3_counts_frames

    subtype, container = meta["subtype"], meta["sf_format"]
    try:
        with source.open() as fh:
            if subtype in _RAW_BYTES and container in _RAW_CONTAINERS:
                return declared_frames(fh, container, channels * _RAW_BYTES[subtype])
            if container == "MP3" and not stopped and not mp3_counts_frames(fh):
                return None
    except (OSError, DataError):
        return None
    return reported if reported > 0 else None


# Frames decoded per call; after an undecodable frame, that block is decoded
# again in small steps, so that all that precedes the damage is kept.
READ_FRAMES = 1 << 20
RECOVER_FRAMES = 1 << 10


def _read_blocks(snd, frames: int, dtype):
    """Decode a compressed stream block by block: its header's frame count may lie, the decoded samples cannot.

    Returns the samples and whether decoding stopped at a frame it could not
    decode (a cut or damaged stream); a stream with nothing decodable raises
    libsndfile's error.
    """
    import numpy as np

    blocks, done, step, stopped = [], 0, READ_FRAMES, False
    while done < frames:
        try:
            block = snd.read(frames=min(frames - done, step), dtype=dtype, always_2d=True)
        except RuntimeError:  # soundfile's LibsndfileError
            if step == RECOVER_FRAMES or not _seek(snd, done):
                if done == 0:
                    raise
                stopped = True
                break
            step = RECOVER_FRAMES
            continue
        if len(block) == 0:
            break
        blocks.append(block)
        done += len(block)
    if not blocks:
        return np.zeros((0, snd.channels), dtype=dtype), stopped
    return (blocks[0] if len(blocks) == 1 else np.concatenate(blocks)), stopped


@contextlib.contextmanager
def _quiet_decoder(fmt: str):
    """Keep libmpg123 from printing to the process's stderr while an MP3 is decoded.

    It writes its own warnings on a damaged stream ("Xing stream size off by
    more than 1%") straight to file descriptor 2, where they would stand
    beside convcli's one line about the same file.
    """
    import os
    import sys

    if fmt != "mp3":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _seek(snd, frame: int) -> bool:
    """Go back to `frame`; False where the stream cannot."""
    try:
        return snd.seek(frame) == frame
    except (RuntimeError, ValueError):
        return False


# libsndfile messages about a file's name or kind: convcli always hands it
# an open file, so they mean the bytes could not be decoded.
_MISLEADING = {"File does not exist or is not a regular file (possibly a pipe?).": "corrupt or truncated stream"}


def _libsndfile_words(exc) -> str:
    """libsndfile's own words for an error, without soundfile's "Error opening <file object>:" prefix.

    soundfile names the file by its Python object's repr; no message of
    convcli shows one.
    """
    import re

    text = getattr(exc, "error_string", None) or str(exc)
    text = re.sub(r"^(Error opening <[^>]*>: )?(Error : )?", "", " ".join(str(text).split()))
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the file", text)
    return _MISLEADING.get(text, text) or type(exc).__name__


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
        raise FormatMismatch(f"a {sig.spatial_ndim}-D {sig.kind} cannot be written as audio; use .npy", subject=dest)
    if not sig.sample_rate or sig.sample_rate <= 0:
        raise OutputError("audio needs a sample rate and this signal has none (read it from an audio file)",
                          subject=dest)
    data = np.asarray(sig.data)
    if data.ndim == 2 and data.shape[1] > MAX_CHANNELS:
        raise FormatMismatch(f"{data.shape[1]} channels is more than audio formats hold", subject=dest)
    notes: list[str] = []
    dtype = np.dtype(sig.meta.get("dtype") or data.dtype)
    in_bits = sig.meta["bits"] if "bits" in sig.meta else _bits_of(dtype)
    wanted = _depth_subtype(depth, fmt, notes) if depth is not None else None
    sf_format, subtype, endian, kind_notes = _output_kind(sig.meta, fmt, dtype, in_bits, wanted)
    notes += kind_notes
    rate = int(round(sig.sample_rate))
    if rate != sig.sample_rate:
        notes.append(f"sample rate {sig.sample_rate:g} Hz rounded to {rate} Hz")
    out_dtype, out_bits = _samples_of(subtype)
    convert = _Converter(data, out_dtype, out_bits, subtype, range_mode, _full_scale(out_bits) / _full_scale(in_bits))
    options = {}
    if compress_level is not None and fmt == "flac":
        options["compression_level"] = int(compress_level) / 9.0
    channels = 1 if data.ndim == 1 else data.shape[1]
    try:
        with atomic_path(dest, suffix=f".{fmt}") as tmp, open_sink(tmp) as sink:
            try:
                with sink.signals_held():
                    snd = sf.SoundFile(sink, "w", rate, channels, subtype, endian, sf_format, **options)
                try:
                    for samples in convert.blocks():
                        with sink.signals_held():
                            snd.write(samples)
                finally:
                    with sink.signals_held():
                        snd.close()
            finally:
                sink.raise_error()  # the disk's own words (OSError: atomic_path names the output)
    except ConvcliError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise OutputError(f"cannot write {fmt.upper()} audio: {_libsndfile_words(exc)}", subject=dest) from None
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
    nothing done, and raised by :meth:`raise_error` afterwards.  For the
    same reason a SIGINT or SIGTERM must not raise while libsndfile runs:
    see :meth:`signals_held`.
    """

    def __init__(self, fh):
        self._fh = fh
        self._error: OSError | None = None
        self._signals: list[int] = []  # SIGINT/SIGTERM that came while libsndfile ran, not yet raised

    @contextlib.contextmanager
    def signals_held(self):
        """Within the block (one libsndfile call), SIGINT and SIGTERM are recorded; their handlers run after it.

        A handler that raises inside a callback (Python code that C called)
        has its exception swallowed: cffi prints "Exception ignored", the
        callback returns 0 and libsndfile carries on, or soundfile fails an
        assertion.  Recorded instead, the signal makes every callback report
        nothing done, so libsndfile gives up within the call, and its own
        handler is then called here, in Python, where its exception unwinds
        the run.  Only the main thread receives signals; elsewhere this does
        nothing.
        """
        import signal
        import threading

        numbers = (signal.SIGINT, signal.SIGTERM)
        previous = {n: signal.getsignal(n) for n in numbers}
        held = [n for n in numbers if callable(previous[n])]  # ignored or default ones need no Python
        if threading.current_thread() is not threading.main_thread() or not held:
            yield
            return
        for n in held:
            signal.signal(n, self._record)
        try:
            yield
        finally:
            for n in held:
                signal.signal(n, previous[n])
            if self._signals:
                signum = self._signals[0]
                previous[signum](signum, None)

    def _record(self, signum, frame) -> None:
        self._signals.append(signum)

    def _guarded(self, call, failed):
        if self._error is not None or self._signals:
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


def _output_kind(meta: dict, fmt: str, dtype, bits, wanted: str | None = None):
    """The container, subtype and byte order to write, and notes on what had to change.

    The input's own where the output can hold them: a WAVEX or RF64 stays
    so, a big-endian file stays big-endian (in its own container only) and
    the subtype is kept (or ``wanted``, the one ``--depth`` asks for);
    otherwise the nearest that libsndfile really writes.
    """
    same = meta.get("format") == fmt
    sf_format = meta["sf_format"] if same and meta.get("sf_format") in ("WAVEX", "RF64") else SF_FORMAT[fmt]
    endian = meta["endian"] if same and meta.get("endian") in ("LITTLE", "BIG") else "FILE"
    subtype = wanted or meta.get("subtype")
    if fmt in CODEC_OF:
        codec = CODEC_OF[fmt]
        return sf_format, codec, "FILE", [] if subtype in (None, codec) else [
            f"{fmt.upper()} cannot store {subtype} samples: written as {codec}"]
    if subtype is not None:
        if _writable(sf_format, subtype, endian):
            return sf_format, subtype, endian, []
        if endian != "FILE" and _writable(sf_format, subtype, "FILE"):
            other = "little" if endian == "BIG" else "big"
            return sf_format, subtype, "FILE", [f"{sf_format} cannot be written {endian.lower()}-endian: "
                                                f"written {other}-endian"]
    nearest = _nearest_subtype(sf_format, dtype, bits, subtype)
    notes = [] if subtype is None else [f"{fmt.upper()} cannot store {subtype} samples: written as {nearest}"]
    return sf_format, nearest, "FILE", notes


@functools.lru_cache(maxsize=None)
def _writable(sf_format: str, subtype: str, endian: str) -> bool:
    """Whether libsndfile writes this combination: tried on an empty file in memory.

    ``soundfile.check_format`` alone is not enough: it accepts MP3 samples
    in a WAV, which libsndfile reads but refuses to write.
    """
    from io import BytesIO

    import soundfile as sf

    if not sf.check_format(sf_format, subtype, endian):
        return False
    try:
        with sf.SoundFile(BytesIO(), "w", 8000, 1, subtype, endian, sf_format):
            pass
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


# The nearest subtypes, best first, to a lossy codec's samples (floats with no bit depth of their own).
_LOSSY_ORDER = ["PCM_16", "PCM_24", "FLOAT", "VORBIS", "OPUS", "MPEG_LAYER_III"]


def _nearest_subtype(sf_format: str, dtype, bits, source_subtype: str | None = None) -> str:
    """The writable subtype of `sf_format` nearest to samples of `dtype` with `bits` significant bits.

    Lossy codecs decode to floats with no precision of their own: they
    become 16-bit PCM, as FFmpeg and SoX decode them.
    """
    import soundfile as sf

    if source_subtype is not None and source_subtype not in SUBTYPE_SAMPLES:
        order = _LOSSY_ORDER
    elif dtype.kind == "f" or bits is None:
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
        if _writable(sf_format, subtype, "FILE"):
            return subtype
    return sf.default_subtype(sf_format)
