"""Audio in and out: subtype, rate and channels kept; integer samples clipped and counted, never wrapped."""
import numpy as np
import pytest
import soundfile as sf

from convcli import io
from convcli.engine import correlate
from convcli.errors import DataError, OutputError
from convcli.io.samples import to_samples

KERNEL = np.array([0.5, 0.3, 0.2])  # asymmetric: catches time reversal
RNG = np.random.default_rng(11)

# subtype -> (numpy type convcli keeps, significant bits, full scale)
SUBTYPES = {
    "PCM_U8": (np.int16, 8), "PCM_16": (np.int16, 16), "PCM_24": (np.int32, 24), "PCM_32": (np.int32, 32),
    "FLOAT": (np.float32, None), "DOUBLE": (np.float64, None),
}
CASES = [("WAV", s) for s in SUBTYPES] + [("FLAC", "PCM_16"), ("FLAC", "PCM_24"), ("FLAC", "PCM_S8"),
                                          ("AIFF", "PCM_16"), ("AIFF", "PCM_24"), ("AIFF", "FLOAT")]
EXT = {"WAV": "wav", "FLAC": "flac", "AIFF": "aiff"}


def _write(path, subtype, fmt="WAV", rate=8000, channels=2, frames=400):
    x = 0.6 * np.sin(np.linspace(0, 40, frames))[:, None] * np.linspace(0.4, 1.0, channels)[None, :]
    x += 0.05 * RNG.standard_normal(x.shape)
    sf.write(path, x if channels > 1 else x[:, 0], rate, subtype=subtype, format=fmt)


@pytest.mark.parametrize("fmt,subtype", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_round_trip_filtered_equals_engine(tmp_path, fmt, subtype):
    src = tmp_path / f"in.{EXT[fmt]}"
    _write(src, subtype, fmt)
    sig = io.read(src)
    dtype, bits = SUBTYPES.get(subtype, (np.int16, 8))
    assert sig.kind == "audio" and sig.sample_rate == 8000 and sig.data.shape == (400, 2)
    assert sig.data.dtype == dtype and sig.meta["subtype"] == subtype and sig.meta["bits"] == bits
    if bits is not None:  # samples are integers of the stored precision
        assert sig.data.min() >= -(2 ** (bits - 1)) and sig.data.max() < 2 ** (bits - 1)
        reference = sf.read(src, dtype="int32")[0] >> (32 - bits)
        np.testing.assert_array_equal(sig.data, reference)
    filtered = correlate(sig.data, KERNEL, channel_axis=-1)
    written = io.write(io.derive(sig, filtered), tmp_path / f"out.{EXT[fmt]}")
    info = sf.info(tmp_path / f"out.{EXT[fmt]}")
    assert (info.subtype, info.samplerate, info.channels, info.format) == (subtype, 8000, 2, fmt)
    back = io.read(tmp_path / f"out.{EXT[fmt]}")
    assert back.data.dtype == sig.data.dtype and written.clipped == 0
    expected = to_samples(filtered, sig.data.dtype, "clip", bits=bits)[0]
    tolerance = 1 if bits is not None else 1e-6
    assert np.abs(back.data.astype(np.float64) - expected.astype(np.float64)).max() <= tolerance


def test_24_bit_48k_stereo_stays_so(tmp_path):
    _write(tmp_path / "hi.wav", "PCM_24", rate=48000, frames=4800)
    sig = io.read(tmp_path / "hi.wav")
    io.write(io.derive(sig, correlate(sig.data, KERNEL, channel_axis=-1)), tmp_path / "o.wav")
    info = sf.info(tmp_path / "o.wav")
    assert (info.subtype, info.samplerate, info.channels, info.frames) == ("PCM_24", 48000, 2, 4800)


def test_clipping_is_counted_not_wrapped(tmp_path):
    _write(tmp_path / "a.wav", "PCM_16", channels=1)
    sig = io.read(tmp_path / "a.wav")
    loud = sig.data.astype(np.float32) * 4.0
    written = io.write(io.derive(sig, loud), tmp_path / "o.wav")
    back = sf.read(tmp_path / "o.wav", dtype="int16")[0].astype(np.int64)
    want = np.clip(loud, -32768, 32767)
    assert written.clipped == int(np.sum((loud > 32767) | (loud < -32768))) > 0
    np.testing.assert_array_equal(back, want)
    assert np.all(np.sign(back) == np.sign(want))  # a wrapped sample would flip sign


def test_stride_divides_the_sample_rate(tmp_path):
    _write(tmp_path / "a.wav", "PCM_16", rate=44100)
    sig = io.read(tmp_path / "a.wav")
    half = io.derive(sig, correlate(sig.data, KERNEL, channel_axis=-1, stride=2), stride=2)
    io.write(half, tmp_path / "h.wav")
    info = sf.info(tmp_path / "h.wav")
    assert info.samplerate == 22050 and info.frames == 200


def test_format_change_converts_units(tmp_path):
    _write(tmp_path / "a.wav", "PCM_16")
    sig = io.read(tmp_path / "a.wav")
    io.write(sig, tmp_path / "f.wav", format="wav")
    sig.meta["subtype"] = "FLOAT"
    io.write(sig, tmp_path / "g.wav")
    as_float = sf.read(tmp_path / "g.wav")[0]
    np.testing.assert_allclose(as_float, sig.data / 32768.0, atol=1e-7)
    # PCM_32 does not exist in FLAC: the nearest subtype is chosen and said.
    _write(tmp_path / "b.wav", "PCM_32")
    notes = io.write(io.read(tmp_path / "b.wav"), tmp_path / "b.flac").notes
    assert sf.info(tmp_path / "b.flac").subtype == "PCM_24" and "PCM_32" in notes[0]


def test_ogg_vorbis_reads_as_float(tmp_path):
    _write(tmp_path / "v.ogg", "VORBIS", fmt="OGG", rate=22050, frames=4000)
    sig = io.read(tmp_path / "v.ogg")
    assert sig.data.dtype == np.float32 and sig.meta["subtype"] == "VORBIS"
    io.write(sig, tmp_path / "o.ogg")
    assert sf.info(tmp_path / "o.ogg").subtype == "VORBIS"


def test_broken_audio_is_a_data_error(tmp_path):
    _write(tmp_path / "ok.wav", "PCM_16")
    raw = (tmp_path / "ok.wav").read_bytes()
    cases = {"empty.wav": b"", "header.wav": raw[:44][:40] + b"\0\0\0\0", "garbage.flac": b"fLaC" + bytes(300),
             "png.wav": b"\x89PNG\r\n\x1a\n" + bytes(100)}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError) as err:
            io.read(tmp_path / name)
        assert err.value.subject == str(tmp_path / name)


def test_lying_data_size_does_not_allocate(tmp_path):
    _write(tmp_path / "a.wav", "PCM_16", channels=1, frames=100)
    raw = bytearray((tmp_path / "a.wav").read_bytes())
    i = raw.index(b"data")
    raw[i + 4:i + 8] = (0xFFFFFFF0).to_bytes(4, "little")
    (tmp_path / "lie.wav").write_bytes(bytes(raw))
    sig = io.read(tmp_path / "lie.wav", memory_budget="1M")
    assert sig.data.shape == (100,)


def test_audio_needs_a_rate_and_one_axis(tmp_path):
    with pytest.raises(OutputError, match="sample rate"):
        io.write(io.Signal(np.zeros(10), kind="signal"), tmp_path / "x.wav")
    with pytest.raises(OutputError, match="cannot be written as audio"):
        io.write(io.Signal(np.zeros((4, 4)), kind="image"), tmp_path / "x.wav")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("FLAC", "PCM_16"), ("AIFF", "FLOAT")])
def test_written_bytes_equal_libsndfiles_own_file_writer(tmp_path, fmt, subtype):
    """The output goes through a file object (no fsync); the bytes are those soundfile writes to a path."""
    src = tmp_path / f"in.{EXT[fmt]}"
    _write(src, subtype, fmt, frames=3000)
    sig = io.read(src)
    io.write(sig, tmp_path / f"ours.{EXT[fmt]}")
    samples = sf.read(src, dtype="float64" if subtype == "FLOAT" else "int32", always_2d=True)[0]
    sf.write(tmp_path / f"theirs.{EXT[fmt]}", samples, 8000, subtype=subtype, format=fmt)
    assert (tmp_path / f"ours.{EXT[fmt]}").read_bytes() == (tmp_path / f"theirs.{EXT[fmt]}").read_bytes()


class _FullDisk:
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, path, room):
        self._fh = open(path, "w+b")
        self._room = room

    def write(self, data):
        if len(data) > self._room:
            import errno
            import os

            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


@pytest.mark.parametrize("room", [0, 10, 5000])
def test_a_full_disk_is_an_output_error_with_no_traceback_and_no_file(tmp_path, monkeypatch, capfd, room):
    from convcli.io import audio

    _write(tmp_path / "in.wav", "PCM_16", frames=20000)
    sig = io.read(tmp_path / "in.wav")
    monkeypatch.setattr(audio, "open_output", lambda path: _FullDisk(path, room))
    with pytest.raises(OutputError, match="No space left on device") as err:
        io.write(sig, tmp_path / "out.wav")
    assert err.value.subject == str(tmp_path / "out.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]  # no output, no temporary file
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # nothing printed from inside libsndfile's callbacks


def test_a_full_disk_through_the_cli_is_one_line_and_exit_1(tmp_path, monkeypatch):
    from conftest import convcli
    from convcli.io import audio

    _write(tmp_path / "in.wav", "PCM_16", frames=20000)
    monkeypatch.setattr(audio, "open_output", lambda path: _FullDisk(path, 100))
    result = convcli("filter", tmp_path / "in.wav", "-k", "box:3", "-o", tmp_path / "out.wav")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"convcli: error: {tmp_path / 'out.wav'}: cannot write: No space left on device"]
    assert not (tmp_path / "out.wav").exists()


def _whole_conversion(values, sig, out_subtype, mode):
    """The samples and clip count of converting the whole signal at once, as libsndfile's full scale holds them."""
    dtype, bits = {"PCM_16": (np.int16, 16), "PCM_24": (np.int32, 24), "PCM_U8": (np.int16, 8)}[out_subtype]
    in_bits = sig.meta["bits"]
    scaled = values.astype(np.float64) * (2.0 ** (bits - 1) / 2.0 ** (in_bits - 1))
    samples, clipped = to_samples(scaled, dtype, mode, bits=bits)
    return samples.astype(np.int64), clipped


@pytest.mark.parametrize("out_subtype", ["PCM_16", "PCM_24", "PCM_U8"])
@pytest.mark.parametrize("mode", ["clip", "abs", "offset", "rescale"])
def test_block_by_block_writing_equals_converting_the_whole_signal(tmp_path, monkeypatch, out_subtype, mode):
    from convcli.io import audio

    monkeypatch.setattr(audio, "WRITE_FRAMES", 7)  # blocks far smaller than the signal, a short last one
    _write(tmp_path / "in.wav", "PCM_16", frames=1000)
    sig = io.read(tmp_path / "in.wav")
    loud = io.derive(sig, sig.data.astype(np.float32) * 3.0 - 2000.0)
    loud.meta["subtype"] = out_subtype
    written = io.write(loud, tmp_path / "out.wav", range=mode)
    expected, clipped = _whole_conversion(loud.data, sig, out_subtype, mode)
    back = io.read(tmp_path / "out.wav").data.astype(np.int64)
    np.testing.assert_array_equal(back, expected)
    assert written.clipped == clipped
    assert mode == "rescale" or clipped > 0


def test_non_finite_samples_late_in_the_signal_are_counted_whole_and_leave_no_file(tmp_path, monkeypatch):
    from convcli.io import audio

    monkeypatch.setattr(audio, "WRITE_FRAMES", 100)
    _write(tmp_path / "in.wav", "PCM_16", frames=1000)
    sig = io.read(tmp_path / "in.wav")
    bad = sig.data.astype(np.float32)
    bad[[5, 950, 951], 0] = np.nan
    bad[990, 1] = np.inf
    with pytest.raises(DataError, match="^4 non-finite samples"):
        io.write(io.derive(sig, bad), tmp_path / "out.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


# ---- every container in, every container out (issue 13) ------------------------------------------------------------

def _riff_to_rifx(raw: bytes, sample_bytes: int) -> bytes:
    """A little-endian WAV or WAVEX rewritten big-endian (RIFX), as the RIFX variant of the format stores it."""
    import struct

    out = bytearray(b"RIFX" + struct.pack(">I", struct.unpack("<I", raw[4:8])[0]) + b"WAVE")
    at = 12
    while at < len(raw):
        cid, size = raw[at:at + 4], struct.unpack("<I", raw[at + 4:at + 8])[0]
        body = raw[at + 8:at + 8 + size]
        if cid == b"fmt ":
            fields = struct.unpack("<HHIIHH", body[:16])
            swapped = struct.pack(">HHIIHH", *fields)
            if len(body) >= 40:  # WAVE_FORMAT_EXTENSIBLE: cbSize, valid bits, channel mask, then the GUID
                swapped += struct.pack(">HHI", *struct.unpack("<HHI", body[16:24]))
                swapped += struct.pack(">IHH", *struct.unpack("<IHH", body[24:32])) + body[32:40]
            body = swapped + body[len(swapped):]
        elif cid == b"fact":
            body = struct.pack(">I", struct.unpack("<I", body[:4])[0])
        elif cid == b"data":
            samples = np.frombuffer(body, np.uint8).reshape(-1, sample_bytes)
            body = samples[:, ::-1].tobytes()  # every sample's bytes reversed
        out += cid + struct.pack(">I", size) + body
        at += 8 + size + (size & 1)
    return bytes(out)


# (file name, libsndfile format, subtype, byte order to write with, byte order expected back)
PCM_CORPUS = [(f"{fmt.lower()}-{sub}-{end.lower()}.wav", fmt, sub, end) for fmt in ("WAV", "WAVEX")
              for sub in ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE") for end in ("LITTLE", "BIG")]
SAMPLE_BYTES = {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def _pcm_file(path, fmt, subtype, endian, frames=3000, channels=2):
    """A WAV or WAVEX of `subtype` in `endian` byte order, full-scale noise included (every bit in use)."""
    rng = np.random.default_rng(5)
    x = np.clip(rng.normal(0, 0.4, (frames, channels)), -1, 1)
    x[:4] = [[1.0] * channels, [-1.0] * channels, [0.999] * channels, [-0.999] * channels]
    little = path.with_suffix(".le.wav")
    sf.write(little, x, 44100, subtype=subtype, format=fmt)
    if endian == "BIG":
        path.write_bytes(_riff_to_rifx(little.read_bytes(), SAMPLE_BYTES[subtype]))
        little.unlink()
    else:
        little.rename(path)


def _stored(path):
    """The samples exactly as stored: integers for PCM, float64 for float subtypes."""
    subtype = sf.info(path).subtype
    return sf.read(path, dtype="float64" if subtype in ("FLOAT", "DOUBLE") else "int32", always_2d=True)[0]


@pytest.mark.parametrize("name,fmt,subtype,endian", PCM_CORPUS, ids=[c[0] for c in PCM_CORPUS])
def test_identity_gives_back_every_pcm_wav_sample_for_sample_in_its_own_kind(tmp_path, name, fmt, subtype, endian):
    from conftest import convcli

    src, out = tmp_path / name, tmp_path / f"out-{name}"
    _pcm_file(src, fmt, subtype, endian)
    with sf.SoundFile(src) as snd:
        assert (snd.format, snd.subtype, snd.endian) == (fmt, subtype, "BIG" if endian == "BIG" else "FILE")
    # 32-bit integers and doubles need float64 arithmetic to come back exact.
    precision = ["--precision", "float64"] if subtype in ("PCM_32", "DOUBLE") else []
    result = convcli("filter", src, "-k", "identity", "-o", out, *precision)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(_stored(out), _stored(src))
    info = sf.info(out)
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (fmt, subtype, 44100, 2, 3000)
    if fmt == "WAV":  # RIFX stays RIFX, and nothing needs saying
        assert out.read_bytes()[:4] == src.read_bytes()[:4] and result.stderr == ""
    elif endian == "BIG":  # libsndfile writes no big-endian WAVEX: the nearest it writes, and why
        assert out.read_bytes()[:4] == b"RIFF"
        assert result.stderr.splitlines() == [
            f"convcli: warning: {src}: WAVEX cannot be written big-endian: written little-endian"]
    else:
        assert out.read_bytes()[:4] == b"RIFF" and result.stderr == ""


@pytest.mark.parametrize("fmt,subtype", [("FLAC", "PCM_16"), ("FLAC", "PCM_24"), ("AIFF", "PCM_32"),
                                         ("CAF", "DOUBLE"), ("W64", "PCM_24"), ("AU", "FLOAT")])
def test_identity_gives_back_other_lossless_containers_exactly(tmp_path, fmt, subtype):
    from conftest import convcli

    ext = {"FLAC": "flac", "AIFF": "aiff", "CAF": "caf", "W64": "w64", "AU": "au"}[fmt]
    _write(tmp_path / f"in.{ext}", subtype, fmt, frames=5000)
    precision = ["--precision", "float64"] if subtype in ("PCM_32", "DOUBLE") else []
    result = convcli("filter", tmp_path / f"in.{ext}", "-k", "identity", "-o", tmp_path / f"out.{ext}", *precision)
    assert result.exit_code == 0 and result.stderr == "", result.output
    np.testing.assert_array_equal(_stored(tmp_path / f"out.{ext}"), _stored(tmp_path / f"in.{ext}"))
    assert (sf.info(tmp_path / f"out.{ext}").format, sf.info(tmp_path / f"out.{ext}").subtype) == (fmt, subtype)


def _encodes(fmt, subtype) -> bool:
    """Whether this libsndfile writes the codec (MP3 needs 1.1 or later; soundfile's wheels bring 1.2)."""
    return fmt in sf.available_formats() and sf.check_format(fmt, subtype)


def _lossy(path, fmt, subtype, frames=22050):
    if not _encodes(fmt, subtype):
        pytest.skip(f"this libsndfile does not write {subtype}")
    t = np.arange(frames) / 44100
    x = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)
    sf.write(path, np.stack([x, -x], axis=1), 44100 if subtype != "OPUS" else 48000, format=fmt, subtype=subtype)


LOSSY = [("speech.mp3", "MP3", "MPEG_LAYER_III"), ("v.ogg", "OGG", "VORBIS"), ("o.opus", "OGG", "OPUS")]


@pytest.mark.parametrize("name,fmt,subtype", LOSSY, ids=[c[0] for c in LOSSY])
@pytest.mark.parametrize("ext,container", [("wav", "WAV"), ("flac", "FLAC"), ("aiff", "AIFF")])
def test_lossy_audio_becomes_16_bit_pcm_in_a_lossless_container_and_says_so(tmp_path, name, fmt, subtype, ext,
                                                                            container):
    """MP3/Vorbis/Opus decode to floats; a PCM container gets them as 16-bit samples, as FFmpeg and SoX decode them."""
    from conftest import convcli

    _lossy(tmp_path / name, fmt, subtype)
    out = tmp_path / f"out.{ext}"
    result = convcli("filter", tmp_path / name, "-k", "identity", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"convcli: warning: {tmp_path / name}: {container} cannot store {subtype} "
                                          "samples: written as PCM_16"]
    info = sf.info(out)
    assert (info.format, info.subtype, info.channels) == (container, "PCM_16", 2)
    decoded = sf.read(tmp_path / name, dtype="float32", always_2d=True)[0]
    expected = np.clip(np.rint(decoded.astype(np.float64) * 32768), -32768, 32767)
    np.testing.assert_array_equal(sf.read(out, dtype="int16", always_2d=True)[0], expected)


def test_the_highpass_on_an_mp3_to_wav_from_the_issue(tmp_path):
    from conftest import convcli

    _lossy(tmp_path / "speech.mp3", "MP3", "MPEG_LAYER_III")
    result = convcli("filter", tmp_path / "speech.mp3", "-k", "highpass:cutoff=200", "-o", tmp_path / "out.wav")
    assert result.exit_code == 0, result.output
    assert "object at 0x" not in result.output and "written as PCM_16" in result.stderr
    assert sf.info(tmp_path / "out.wav").subtype == "PCM_16"


@pytest.mark.parametrize("name,fmt,subtype", LOSSY, ids=[c[0] for c in LOSSY])
def test_lossy_audio_stays_in_its_own_codec(tmp_path, name, fmt, subtype):
    from conftest import convcli

    _lossy(tmp_path / name, fmt, subtype)
    out = tmp_path / f"out{name[name.index('.'):]}"
    result = convcli("filter", tmp_path / name, "-k", "box:3", "-o", out)
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert (sf.info(out).format, sf.info(out).subtype) == (fmt, subtype)


INPUT_KINDS = [("WAV", "PCM_U8", "wav"), ("WAV", "PCM_24", "wav"), ("WAVEX", "PCM_32", "wav"), ("RF64", "FLOAT", "wav"),
               ("AIFF", "PCM_S8", "aiff"), ("FLAC", "PCM_24", "flac"), ("CAF", "ALAW", "caf"), ("AU", "ULAW", "au"),
               ("W64", "DOUBLE", "w64"), ("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")]
OUTPUTS = ["wav", "flac", "ogg", "aiff", "au", "caf", "w64"] + (["mp3"] if _encodes("MP3", "MPEG_LAYER_III") else [])


@pytest.mark.parametrize("fmt,subtype,ext", INPUT_KINDS, ids=[f"{f}-{s}" for f, s, _ in INPUT_KINDS])
def test_every_input_kind_writes_to_every_output_container(tmp_path, fmt, subtype, ext):
    """The subtype is kept where the container can hold it, else the nearest one libsndfile really writes, said once."""
    if not _encodes(fmt, subtype):
        pytest.skip(f"this libsndfile does not write {subtype}")
    _write(tmp_path / f"in.{ext}", subtype, fmt, rate=44100, frames=2000)
    sig = io.read(tmp_path / f"in.{ext}")
    for out_ext in OUTPUTS:
        out = tmp_path / f"out.{out_ext}"
        written = io.write(sig, out)
        info = sf.info(out)
        assert info.frames >= 1 and info.channels == 2
        if info.subtype == subtype:
            assert written.notes == []
        else:
            assert written.notes == [f"{out_ext.upper()} cannot store {subtype} samples: written as {info.subtype}"]


SHORT = [("WAV", "wav"), ("WAVEX", "wav"), ("RF64", "wav"), ("W64", "w64"), ("AIFF", "aiff"), ("AU", "au")]


@pytest.mark.parametrize("fmt,ext", SHORT)
def test_a_file_shorter_than_its_header_says_is_filtered_as_far_as_it_goes_with_both_counts(tmp_path, fmt, ext):
    from conftest import convcli

    _write(tmp_path / f"full.{ext}", "PCM_16", fmt, rate=44100, channels=1, frames=4410)
    raw = (tmp_path / f"full.{ext}").read_bytes()
    header = len(raw) - 4410 * 2
    (tmp_path / f"cut.{ext}").write_bytes(raw[:header + 236 * 2])
    result = convcli("filter", tmp_path / f"cut.{ext}", "-k", "identity", "-o", tmp_path / "out.wav")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"convcli: warning: {tmp_path / f'cut.{ext}'}: cut short: the header "
                                          "declares 4,410 frames but the file holds 236; those were filtered"]
    np.testing.assert_array_equal(_stored(tmp_path / "out.wav"), _stored(tmp_path / f"full.{ext}")[:236])


def test_a_cut_flac_keeps_what_decodes_before_the_cut(tmp_path):
    from conftest import convcli
    from convcli.io import audio

    _write(tmp_path / "full.flac", "PCM_16", "FLAC", rate=44100, frames=88200)
    raw = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(raw[:len(raw) // 3])
    result = convcli("filter", tmp_path / "cut.flac", "-k", "identity", "-o", tmp_path / "out.flac")
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.splitlines()
    kept = sf.info(tmp_path / "out.flac").frames
    assert f"the header declares 88,200 frames but the file holds {kept:,}" in line
    # Everything before the damaged FLAC frame (4096 samples) is there, less at most one recovery block.
    assert 88200 // 3 - 4096 - audio.RECOVER_FRAMES < kept < 88200 // 3
    np.testing.assert_array_equal(_stored(tmp_path / "out.flac"), _stored(tmp_path / "full.flac")[:kept])


def test_a_cut_mp3_with_a_frame_count_says_so_with_one_line_of_its_own(tmp_path):
    """libmpg123 prints its own complaint about a cut stream to stderr; convcli's one line replaces it."""
    from conftest import convcli_process

    _lossy(tmp_path / "full.mp3", "MP3", "MPEG_LAYER_III", frames=88200)
    raw = (tmp_path / "full.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(raw[:len(raw) // 2])
    result = convcli_process("filter", tmp_path / "cut.mp3", "-k", "identity", "-o", tmp_path / "out.wav", text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "written as PCM_16" in lines[1]
    kept = sf.info(tmp_path / "out.wav").frames
    assert lines[0] == (f"convcli: warning: {tmp_path / 'cut.mp3'}: cut short: the header declares 88,200 frames "
                        f"but the file holds {kept:,}; those were filtered")


def _patched_size(raw: bytes, marker: bytes, size: int, order: str = "<") -> bytes:
    import struct

    at = raw.index(marker) + 4
    return raw[:at] + struct.pack(order + "I", size) + raw[at + 4:]


@pytest.mark.parametrize("how", ["complete", "ffmpeg-pipe", "sox-pipe"])
def test_no_cut_short_warning_for_whole_files_and_streamed_headers(tmp_path, how):
    """FFmpeg and SoX writing to a pipe cannot fill in the sizes: 0xFFFFFFFF or 0x7FFFF000 mean "unknown"."""
    from conftest import convcli

    _write(tmp_path / "a.wav", "PCM_16", rate=44100, frames=3000)
    raw = (tmp_path / "a.wav").read_bytes()
    size = {"complete": None, "ffmpeg-pipe": 0xFFFFFFFF, "sox-pipe": 0x7FFFF000}[how]
    if size is not None:
        raw = _patched_size(_patched_size(raw, b"RIFF", size), b"data", size)
    (tmp_path / "b.wav").write_bytes(raw)
    result = convcli("filter", tmp_path / "b.wav", "-k", "identity", "-o", tmp_path / "out.wav")
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert sf.info(tmp_path / "out.wav").frames == 3000


@pytest.mark.parametrize("fmt,subtype,ext", [("AIFF", "PCM_24", "aiff"), ("CAF", "PCM_16", "caf"),
                                             ("W64", "FLOAT", "w64"), ("AU", "PCM_16", "au"), ("RF64", "PCM_16", "wav"),
                                             ("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg"),
                                             ("MP3", "MPEG_LAYER_III", "mp3")])
def test_whole_files_of_every_container_are_not_reported_short(tmp_path, fmt, subtype, ext):
    if not _encodes(fmt, subtype):
        pytest.skip(f"this libsndfile does not write {subtype}")
    _write(tmp_path / f"a.{ext}", subtype, fmt, rate=44100, frames=30000)
    assert "short_read" not in io.read(tmp_path / f"a.{ext}").meta


def test_audio_errors_never_show_a_python_object(tmp_path):
    from conftest import convcli

    _write(tmp_path / "a.wav", "PCM_16", rate=44100, channels=3)
    (tmp_path / "bad.ogg").write_bytes(b"OggS" + bytes(200))
    (tmp_path / "bad.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(100))
    runs = [convcli("filter", tmp_path / "a.wav", "-k", "identity", "-o", tmp_path / "three.mp3"),  # MP3: 1-2 channels
            convcli("filter", tmp_path / "bad.ogg", "-k", "identity", "-o", tmp_path / "o.wav"),
            convcli("filter", tmp_path / "bad.mp3", "-k", "identity", "-o", tmp_path / "o.wav")]
    for result in runs:
        assert result.exit_code == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith("convcli: error: ") and "object at 0x" not in line and "<" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "bad.mp3", "bad.ogg"]


def test_integer_arrays_keep_their_scale_as_audio(tmp_path):
    """An int16 .npy read as audio is 16-bit PCM: 1000 stays 1000, not a float sample of 1000.0 clipped to 1."""
    from conftest import convcli

    samples = (np.arange(-2000, 2000, 10, dtype=np.int16))
    np.save(tmp_path / "a.npy", samples)
    io.write(io.Signal(samples, kind="audio", sample_rate=8000.0, meta={"dtype": "int16"}), tmp_path / "a.wav")
    info = sf.info(tmp_path / "a.wav")
    assert info.subtype == "PCM_16"
    np.testing.assert_array_equal(sf.read(tmp_path / "a.wav", dtype="int16")[0], samples)
    assert convcli("filter", tmp_path / "a.wav", "-k", "identity", "-o", tmp_path / "b.wav").exit_code == 0


def test_an_opus_file_holds_opus_whatever_the_input_codec(tmp_path):
    from conftest import convcli

    if not _encodes("OGG", "OPUS"):
        pytest.skip("this libsndfile does not write Opus")
    x = 0.3 * np.sin(np.arange(9600) / 7.0)
    sf.write(tmp_path / "v48.ogg", x, 48000, format="OGG", subtype="VORBIS")
    result = convcli("filter", tmp_path / "v48.ogg", "-k", "identity", "-o", tmp_path / "o.opus")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"convcli: warning: {tmp_path / 'v48.ogg'}: OPUS cannot store VORBIS samples: written as OPUS"]
    assert (sf.info(tmp_path / "o.opus").format, sf.info(tmp_path / "o.opus").subtype) == ("OGG", "OPUS")
    # Opus has five sample rates; any other is one line, and no file.
    sf.write(tmp_path / "v44.ogg", x, 44100, format="OGG", subtype="VORBIS")
    result = convcli("filter", tmp_path / "v44.ogg", "-k", "identity", "-o", tmp_path / "p.opus")
    assert result.exit_code == 1 and not (tmp_path / "p.opus").exists()
    assert result.stderr.splitlines() == [f"convcli: error: {tmp_path / 'p.opus'}: cannot write OPUS audio: Opus only "
                                          "supports sample rates of 8000, 12000, 16000, 24000, and 48000."]
