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
