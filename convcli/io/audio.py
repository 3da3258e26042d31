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
import sys

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
    as far as it goes, and ``meta["short_read"]`` gives both counts.  With
    ``stream``, a file whose samples are over the memory budget is not read
    but opened for reading in blocks: ``Signal.streamed`` is set, ``data``
    only gives the shape and type, and ``Signal.blocks`` reads the samples
    (see :class:`AudioBlocks`).
    """
    import numpy as np
    import soundfile as sf

    from .signal import Signal

    if kind not in (None, "audio", "signal"):
        raise UsageError(f"an audio file cannot be read as {kind}", subject="--kind")
    subject = source.name
    try:
        with _quiet_decoder(fmt), source.open() as fh, sf.SoundFile(fh) as snd:
            head = _Header.of(snd, source, fmt)
            if stream and kind != "signal" and head.plausible(source) \
                    and not limits.fits_samples((head.frames, head.channels), head.itemsize):
                blocks = AudioBlocks(source, head)
                shape = (head.frames,) if head.channels == 1 else (head.frames, head.channels)
                return Signal(data=np.broadcast_to(np.zeros((), head.dtype), shape), kind="audio",
                              channel_axis=None if head.channels == 1 else -1, sample_rate=float(head.rate),
                              meta=dict(head.meta), streamed=True, blocks=blocks)
            limits.check_samples((head.frames, head.channels), head.itemsize, subject)
            if head.raw:
                data, stopped = snd.read(frames=head.frames, dtype=head.dtype, always_2d=True), False
            else:
                data, stopped = _read_blocks(snd, head.frames, head.dtype)
            reported = snd.frames
    except DataError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot decode the audio: {_libsndfile_words(exc)}", subject=subject) from None
    if len(data) == 0:
        raise DataError("no audio samples (0 frames)", subject=subject)
    meta = dict(head.meta)
    declared = _declared_frames(source, meta, head.channels, reported, stopped)
    if declared is not None and len(data) < declared:
        meta["short_read"] = (len(data), declared)
    data = head.shifted(data)
    if data.shape[1] == 1:
        data = data[:, 0]
    data = np.ascontiguousarray(data)
    return Signal(data=data, kind=kind or "audio", channel_axis=None if data.ndim == 1 else -1,
                  sample_rate=float(head.rate), meta=meta)


class _Header:
    """What an audio file's header says, checked: rate, channels, subtype, frames (bounded by the bytes present)."""

    def __init__(self, **facts):
        self.__dict__.update(facts)

    @classmethod
    def of(cls, snd, source, fmt: str) -> "_Header":
        import numpy as np

        subject = source.name
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
        meta = {"format": fmt, "sf_format": snd.format, "subtype": subtype, "endian": snd.endian,
                "dtype": dtype, "bits": bits}
        return cls(rate=rate, channels=channels, subtype=subtype, frames=frames, raw=raw, dtype=dtype, bits=bits,
                   itemsize=np.dtype(dtype).itemsize, meta=meta, fmt=fmt)

    def plausible(self, source) -> bool:
        """Whether the frame count can be believed enough to read the file in blocks.

        PCM counts are bounded by the bytes present; a compressed stream's
        header may claim anything (a FLAC of 64 KiB announcing 2**36 frames),
        so it is believed up to :data:`~convcli.io.limits.BOMB_RATIO` times
        its size, and beyond that refused from the header as any over-budget
        file is.
        """
        from .limits import BOMB_RATIO

        return self.raw or self.frames * self.channels * self.itemsize <= BOMB_RATIO * max(source.size, 1)

    def shifted(self, data):
        """Integer samples back at their stored precision: libsndfile scales every integer type to the
        container's full range (exact: the low bits are zero)."""
        import numpy as np

        if self.bits is not None and self.bits < np.iinfo(data.dtype).bits:
            data >>= np.iinfo(data.dtype).bits - self.bits
        return data


class AudioBlocks:
    """An audio file read a block of frames at a time, as often as asked: each call reads it from the start.

    ``blocks = signal.blocks; for part in blocks(): ...`` gives the samples
    as :func:`read_audio` would (mono 1-D, more channels frames x channels,
    integers at their stored precision), in blocks of ``frames`` frames.
    After a pass, :attr:`short_read` is (frames read, frames declared) for a
    file cut short, else None.  A stream that cannot be decoded raises a
    :class:`~convcli.errors.DataError` naming the file.
    """

    def __init__(self, source, header: _Header):
        self.source, self.header = source, header
        self.short_read: tuple[int, int] | None = None

    @property
    def frames(self) -> int:
        return self.header.frames

    def __call__(self, frames: int | None = None):
        import soundfile as sf

        head, subject = self.header, self.source.name
        done, stopped = 0, False
        try:
            with _quiet_decoder(head.fmt), self.source.open() as fh, sf.SoundFile(fh) as snd:
                for block, stopped in _decoded(snd, head.frames, head.dtype, frames or READ_FRAMES,
                                               recover=not head.raw):
                    if not len(block):
                        continue
                    done += len(block)
                    block = head.shifted(block)
                    yield block[:, 0] if head.channels == 1 else block
                reported = snd.frames
        except DataError:
            raise
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
            raise DataError(f"cannot decode the audio: {_libsndfile_words(exc)}", subject=subject) from None
        if done == 0:
            raise DataError("no audio samples (0 frames)", subject=subject)
        declared = _declared_frames(self.source, head.meta, head.channels, reported, stopped)
        declared = max(declared or 0, head.frames)
        self.short_read = (done, declared) if done < declared else None


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

    blocks, stopped = [], False
    for block, stopped in _decoded(snd, frames, dtype, READ_FRAMES, recover=True):
        blocks.append(block)
    if not blocks:
        return np.zeros((0, snd.channels), dtype=dtype), stopped
    return (blocks[0] if len(blocks) == 1 else np.concatenate(blocks)), stopped


def _decoded(snd, frames: int, dtype, step: int, *, recover: bool):
    """Yield (block, stopped) pairs: up to ``frames`` frames in blocks of ``step``.

    With ``recover``, after an undecodable frame the block is decoded again
    in small steps, so that all that precedes the damage is kept, and
    ``stopped`` turns true where decoding could go no further; a stream with
    nothing decodable raises libsndfile's error.
    """
    done, size = 0, step
    while done < frames:
        try:
            block = snd.read(frames=min(frames - done, size), dtype=dtype, always_2d=True)
        except RuntimeError:  # soundfile's LibsndfileError
            if not recover:
                raise
            if size == RECOVER_FRAMES or not _seek(snd, done):
                if done == 0:
                    raise
                yield _empty(snd, dtype), True
                return
            size = RECOVER_FRAMES
            continue
        if len(block) == 0:
            return
        done += len(block)
        yield block, False


def _empty(snd, dtype):
    import numpy as np

    return np.zeros((0, snd.channels), dtype=dtype)


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

    data = np.asarray(sig.data)
    channels = 1 if data.ndim == 1 else data.shape[1]
    with AudioWriter(dest, fmt, like=sig, channels=channels, frames=len(data), compress_level=compress_level,
                     depth=depth, range_mode=range_mode) as out:
        step = len(data) if range_mode == "rescale" else WRITE_FRAMES  # rescale needs the whole signal's range
        for start in range(0, max(len(data), 1), max(step, 1)):
            try:
                out.write(data[start:start + step])
            except DataError:
                if step >= len(data):
                    raise
                out.converter.convert(data)  # counts the whole signal's non-finite samples in its error
                raise
    return out.written


# A RIFF WAV counts its bytes in 32 bits: a longer one is written as RF64, which libsndfile reads back.
WAV_MAX_BYTES = (1 << 32) - (1 << 20)


class AudioWriter:
    """An audio file written a block at a time, atomically: nothing at ``dest`` until it is complete.

    ``like`` is a Signal whose metadata (format, subtype, bits, rate) the
    output keeps; ``channels`` and ``frames`` (when known: a WAV longer than
    4 GiB is written as RF64, and said) describe what will be written.  In a
    ``with`` block, :meth:`write` takes float (or integer) samples in the
    input's units, 1-D or frames x channels; on leaving without an error the
    file is renamed onto ``dest``.  :attr:`written` then counts clipped
    samples and carries the notes.
    """

    def __init__(self, dest: str, fmt: str, *, like, channels: int, frames: int | None = None, compress_level=None,
                 depth=None, range_mode: str = "clip", rate: float | None = None):
        import numpy as np

        if like.spatial_ndim != 1:
            raise FormatMismatch(f"a {like.spatial_ndim}-D {like.kind} cannot be written as audio; use .npy",
                                 subject=dest)
        rate = like.sample_rate if rate is None else rate
        if not rate or rate <= 0:
            raise OutputError("audio needs a sample rate and this signal has none (read it from an audio file)",
                              subject=dest)
        if channels > MAX_CHANNELS:
            raise FormatMismatch(f"{channels} channels is more than audio formats hold", subject=dest)
        self.dest, self.fmt, self.channels = dest, fmt, channels
        self.notes: list[str] = []
        dtype = np.dtype(like.meta.get("dtype") or like.data.dtype)
        in_bits = like.meta["bits"] if "bits" in like.meta else _bits_of(dtype)
        wanted = _depth_subtype(depth, fmt, self.notes) if depth is not None else None
        sf_format, subtype, endian, kind_notes = _output_kind(like.meta, fmt, dtype, in_bits, wanted)
        self.notes += kind_notes
        out_dtype, out_bits = _samples_of(subtype)
        if sf_format in ("WAV", "WAVEX") and frames is not None and subtype in _RAW_BYTES \
                and frames * channels * _RAW_BYTES[subtype] > WAV_MAX_BYTES:
            sf_format = "RF64"
            self.notes.append("more than 4 GiB of samples: written as RF64, the WAV that holds them")
        self.rate = int(round(rate))
        if self.rate != rate:
            self.notes.append(f"sample rate {rate:g} Hz rounded to {self.rate} Hz")
        self.format = (sf_format, subtype, endian)
        self.converter = _Converter(out_dtype, out_bits, subtype, range_mode,
                                    _full_scale(out_bits) / _full_scale(in_bits))
        self.options = {}
        if compress_level is not None and fmt == "flac":
            self.options["compression_level"] = int(compress_level) / 9.0
        self._stack = None
        self._snd = None
        self._sink = None
        self.frames = 0

    def __enter__(self) -> "AudioWriter":
        import soundfile as sf

        from .files import atomic_path

        stack = contextlib.ExitStack()
        try:
            tmp = stack.enter_context(atomic_path(self.dest, suffix=f".{self.fmt}"))
            sink = stack.enter_context(open_sink(tmp))
            stack.callback(sink.raise_error)  # the disk's own words (OSError: atomic_path names the output)
            sf_format, subtype, endian = self.format
            self._sink = sink
            # Every libsndfile call with SIGINT/SIGTERM held (see Sink.signals_held): a signal is acted on after it.
            with sink.signals_held():
                self._snd = self._guard(lambda: sf.SoundFile(
                    sink, "w", self.rate, self.channels, subtype, endian, sf_format, **self.options))
            stack.callback(self._close)
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        self._stack = stack
        return self

    def write(self, values) -> None:
        """Convert and append ``values`` (in the input's units) to the file."""
        values = values if values.ndim == 1 or self.channels > 1 else values.reshape(-1)
        step = max(len(values), 1) if self.converter.mode == "rescale" else WRITE_FRAMES  # the block's own range
        for start in range(0, max(len(values), 1), step):
            part = values[start:start + step] if len(values) > step else values
            samples = self.converter.convert(part)
            with self._sink.signals_held():
                self._guard(lambda: self._snd.write(samples))
            self.frames += len(part)

    def __exit__(self, kind, value, traceback) -> bool:
        stack, self._stack = self._stack, None
        try:
            return stack.__exit__(kind, value, traceback)
        except ConvcliError:
            raise
        except (RuntimeError, TypeError, ValueError) as exc:
            raise OutputError(f"cannot write {self.fmt.upper()} audio: {_libsndfile_words(exc)}",
                              subject=self.dest) from None

    def _close(self) -> None:
        with self._sink.signals_held():
            self._guard(self._snd.close)

    @property
    def scales(self) -> tuple[float, float | None]:
        """The output's full scale and its largest sample (None for floats, which hold more), in the input's units."""
        convert = self.converter
        full = _full_scale(convert.out_bits)
        if convert.out_bits is not None:
            top = full - 1.0
        else:
            top = None if convert.subtype in ("FLOAT", "DOUBLE") else 1.0  # lossy encoders clip at full scale
        return full / convert.scale, None if top is None else top / convert.scale

    @property
    def written(self):
        from .signal import Written

        return Written(path=self.dest, format=self.fmt, clipped=self.converter.clipped, notes=self.notes)

    def _guard(self, call):
        import soundfile as sf

        try:
            return call()
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            if isinstance(exc, ConvcliError):
                raise
            raise OutputError(f"cannot write {self.fmt.upper()} audio: {_libsndfile_words(exc)}",
                              subject=self.dest) from None


# Frames converted and written at a time: the block's samples, and libsndfile's
# copy of them, stay in cache, and no output-sized sample array is made
# (180 s of 16-bit stereo: 20-40 ms less than converting it whole, then writing).
WRITE_FRAMES = 1 << 16


class _Converter:
    """Float results to the output subtype's samples by :func:`convcli.samples.to_samples`, block by block.

    Values are brought from the input's full scale to the output's first
    (24-bit in, 16-bit out: divided by 256).
    """

    def __init__(self, out_dtype, out_bits, subtype: str, mode: str, scale: float):
        self.out_dtype, self.out_bits, self.subtype = out_dtype, out_bits, subtype
        self.mode, self.scale = mode, scale
        self.clipped = 0

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
