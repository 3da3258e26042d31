"""Audio as audio people use it (issue 18): reverb that starts at the click, its tail, mix, gain, peak level,
multichannel impulse responses, resampling, and files read, filtered and written in blocks.

Every case runs the real command on real files; the references are numpy's own convolution, scipy's
resample_poly and the literal definitions.
"""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import convcli, leftovers, peak_memory

RATE = 8000


def _wav(path, data, rate=RATE, subtype="PCM_16"):
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def _room(n=2000, seed=0, channels=1):
    """A decaying noise impulse response whose sum is negative (a measured room's often is)."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, channels)) * np.exp(-np.arange(n) / (n / 6))[:, None]
    h[0] = -0.9
    return h[:, 0] if channels == 1 else h


def _music(seconds=2.0, channels=2, seed=1, level=0.25):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = level * np.sin(2 * np.pi * 440 * t)
    x = tone[:, None] + 0.05 * rng.standard_normal((len(t), channels))
    return x[:, 0] if channels == 1 else x


def _run(*args):
    result = convcli("filter", *map(str, args))
    assert result.exit_code == 0, result.output
    return result


def _refused(args, *needles, code=2):
    result = convcli("filter", *map(str, args))
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("convcli: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _read(path, dtype="float64"):
    data, rate = sf.read(str(path), dtype=dtype)
    return data, rate


# ---------------------------------------------------------------------------- time: the click and the tail
def test_the_reverb_of_a_click_starts_at_the_click(tmp_path):
    x = np.zeros((4 * RATE, 2))
    x[2 * RATE] = 0.5  # a click at 2.0 s
    h = _room(RATE // 2)
    _run(_wav(tmp_path / "in.wav", x), "-k", f"ir:{_wav(tmp_path / 'hall.wav', h, subtype='FLOAT')}",
         "--ir-norm", "none", "-o", tmp_path / "out.wav")
    y, _ = _read(tmp_path / "out.wav")
    assert y.shape == x.shape  # no pre-delay: the file keeps its length
    assert np.flatnonzero(np.abs(y[:, 0]) > 1e-3)[0] == 2 * RATE
    np.testing.assert_allclose(y[2 * RATE:2 * RATE + len(h), 0], np.clip(0.5 * h, -1, 32767 / 32768), atol=1 / 32768)


def test_the_tail_is_the_input_plus_the_decay(tmp_path):
    x = _music(1.0, channels=2)
    h = _room(3000)
    src, ir = _wav(tmp_path / "in.wav", x), _wav(tmp_path / "ir.wav", h, subtype="FLOAT")
    _run(src, "-k", f"ir:{ir}", "--tail", "--ir-norm", "none", "-o", tmp_path / "tail.wav")
    y, _ = _read(tmp_path / "tail.wav")
    assert y.shape == (len(x) + len(h) - 1, 2)
    xs = _read(src)[0]
    want = np.stack([np.convolve(xs[:, c], h) for c in range(2)], axis=1)
    np.testing.assert_allclose(y, np.clip(want, -1, 32767 / 32768), atol=1.01 / 32768)
    # --padding full on a causal response is the same: no padding moves the sound later.
    _run(src, "-k", f"ir:{ir}", "--padding", "full", "--ir-norm", "none", "-o", tmp_path / "full.wav")
    np.testing.assert_array_equal(_read(tmp_path / "full.wav")[0], y)


def test_tail_takes_a_duration_or_nothing_wherever_it_stands(tmp_path):
    src = _wav(tmp_path / "in.wav", _music(0.5, channels=1, level=0.1))
    ir = _wav(tmp_path / "ir.wav", _room(3000), subtype="FLOAT")
    for i, args in enumerate([(src, "-k", f"ir:{ir}", "--tail"), ("--tail", src, "-k", f"ir:{ir}"),
                              ("-k", f"ir:{ir}", "--tail", src)]):
        _run(*args, "-o", tmp_path / f"t{i}.wav")
        assert len(_read(tmp_path / f"t{i}.wav")[0]) == RATE // 2 + 3000 - 1, args
    _run(src, "-k", f"ir:{ir}", "--tail", ".05", "-o", tmp_path / "short.wav")
    assert len(_read(tmp_path / "short.wav")[0]) == RATE // 2 + RATE // 20


def test_a_kept_tail_is_cut_and_faded(tmp_path):
    x = _music(1.0, channels=1, level=0.1)
    h = _room(RATE)  # a one-second decay
    src, ir = _wav(tmp_path / "in.wav", x), _wav(tmp_path / "ir.wav", h, subtype="FLOAT")
    _run(src, "-k", f"ir:{ir}", "--tail", "250ms", "-o", tmp_path / "cut.wav", "--depth", "32f")
    y, _ = _read(tmp_path / "cut.wav")
    assert len(y) == len(x) + RATE // 4
    _run(src, "-k", f"ir:{ir}", "--tail", "-o", tmp_path / "all.wav", "--depth", "32f")
    whole, _ = _read(tmp_path / "all.wav")
    fade = int(0.05 * RATE)
    np.testing.assert_allclose(y[:-fade], whole[:len(y) - fade], atol=1e-7)  # untouched before the fade
    ramp = y[-fade:] / np.where(whole[len(y) - fade:len(y)] == 0, 1, whole[len(y) - fade:len(y)])
    assert np.all(np.diff(ramp) < 1e-6) and abs(ramp[-1]) < 0.01  # down to nothing: no click
    _run(src, "-k", f"ir:{ir}", "--tail", "250ms", "--fade", "0", "-o", tmp_path / "hard.wav", "--depth", "32f")
    np.testing.assert_allclose(_read(tmp_path / "hard.wav")[0], whole[:len(y)], atol=1e-7)


# ---------------------------------------------------------------------------- level
@pytest.mark.parametrize("subtype, fmt", [("PCM_16", "wav"), ("PCM_24", "wav"), ("PCM_16", "flac"),
                                          ("FLOAT", "wav")])
def test_mix_zero_gives_the_input_bit_for_bit(tmp_path, subtype, fmt):
    src = _wav(tmp_path / f"in.{fmt}", _music(1.0), subtype=subtype)
    ir = _wav(tmp_path / "ir.wav", _room(), subtype="FLOAT")
    _run(src, "-k", f"ir:{ir}", "--mix", "0", "-o", tmp_path / f"out.{fmt}")
    raw = "int32" if subtype != "FLOAT" else "float32"
    np.testing.assert_array_equal(_read(tmp_path / f"out.{fmt}", raw)[0], _read(src, raw)[0])
    assert sf.info(str(tmp_path / f"out.{fmt}")).subtype == subtype


def test_mix_is_a_linear_crossfade_and_gain_multiplies(tmp_path):
    x = _music(1.0, channels=1)
    h = _room(500)
    src, ir = _wav(tmp_path / "in.wav", x, subtype="FLOAT"), _wav(tmp_path / "ir.wav", h, subtype="FLOAT")
    _run(src, "-k", f"ir:{ir}", "--mix", "30%", "--gain", "-6", "--ir-norm", "none", "-o", tmp_path / "out.wav")
    xs = _read(src)[0]
    wet = np.convolve(xs, h)[:len(xs)]
    want = (0.7 * xs + 0.3 * wet) * 10 ** (-6 / 20)
    np.testing.assert_allclose(_read(tmp_path / "out.wav")[0], want, atol=2e-6)


def test_responses_are_levelled_to_unit_energy_by_default(tmp_path):
    noise = np.random.default_rng(5).standard_normal((4 * RATE, 2)) * 0.1
    src = _wav(tmp_path / "in.wav", noise, subtype="FLOAT")
    ir = _wav(tmp_path / "ir.wav", _room(RATE // 4) * 40, subtype="FLOAT")  # recorded 32 dB too hot
    _run(src, "-k", f"ir:{ir}", "-o", tmp_path / "out.wav")
    y, _ = _read(tmp_path / "out.wav")
    ratio_db = 10 * np.log10(np.mean(y[RATE:] ** 2) / np.mean(noise[RATE:] ** 2))
    assert abs(ratio_db) < 0.5  # the wet as loud as the dry
    assert np.corrcoef(y[RATE // 4:, 0], np.convolve(noise[:, 0], _room(RATE // 4))[RATE // 4:len(noise)])[0, 1] > 0.99


@pytest.mark.parametrize("target", ["-1", "0", "-12.5"])
def test_normalize_peak_sets_the_peak_and_clips_nothing(tmp_path, target):
    loud = _music(2.0, level=0.8)
    src, ir = _wav(tmp_path / "in.wav", loud), _wav(tmp_path / "ir.wav", _room(800), subtype="FLOAT")
    plain = convcli("filter", src, "-k", f"ir:{ir}", "--ir-norm", "peak", "-o", tmp_path / "plain.wav")
    assert "samples clipped" in plain.stderr  # what the level control is for
    result = _run(src, "-k", f"ir:{ir}", "--ir-norm", "peak", "--normalize-peak", target, "-o", tmp_path / "out.wav",
                  "--json")
    import json

    assert json.loads(result.stdout)["clipped"] == 0 and "clipped" not in result.stderr
    y, _ = _read(tmp_path / "out.wav", "int16")
    peak = np.abs(y.astype(np.int64)).max()
    assert abs(20 * np.log10(peak / 32768) - float(target)) <= 0.01 + (20 * np.log10(32768 / 32767) if target == "0"
                                                                        else 0)
    assert y.max() < 32767 or target == "0"


def test_range_on_audio_means_what_it_says_for_sound(tmp_path):
    x = _music(1.0, channels=1) + 0.1  # a little DC of its own
    src = _wav(tmp_path / "in.wav", x, subtype="FLOAT")
    _run(src, "-k", "lowpass:cutoff=1k", "--range", "abs", "-o", tmp_path / "abs.wav")
    assert _read(tmp_path / "abs.wav")[0].min() >= 0  # rectified, even in a float file
    _run(src, "-k", "lowpass:cutoff=1k", "--range", "rescale", "-o", tmp_path / "rescale.wav")
    _run(src, "-k", "lowpass:cutoff=1k", "-o", tmp_path / "plain.wav")
    rescaled, plain = _read(tmp_path / "rescale.wav")[0], _read(tmp_path / "plain.wav")[0]
    assert np.abs(rescaled).max() == pytest.approx(1.0, abs=1e-6)  # level only: the peak at full scale
    np.testing.assert_allclose(rescaled, plain / np.abs(plain).max(), atol=1e-6)  # ... and no offset added
    _refused([src, "-k", "lowpass:cutoff=1k", "--range", "offset", "-o", tmp_path / "o.wav"], "--range",
             "DC offset")


# ---------------------------------------------------------------------------- channels
def _true_stereo_reference(x, h4):
    """L out = L * h_LL + R * h_RL, R out = L * h_LR + R * h_RR, causal, cut at the input's length."""
    conv = lambda a, h: np.convolve(a, h)[:len(a)]  # noqa: E731
    return np.stack([conv(x[:, 0], h4[:, 0]) + conv(x[:, 1], h4[:, 2]),
                     conv(x[:, 0], h4[:, 1]) + conv(x[:, 1], h4[:, 3])], axis=1)


def test_a_true_stereo_response(tmp_path):
    x = _music(1.5, channels=2, level=0.2)
    h4 = _room(1500, seed=3, channels=4) * np.array([1.0, 0.3, 0.2, 0.8])
    src = _wav(tmp_path / "in.wav", x, subtype="FLOAT")
    ir = _wav(tmp_path / "ts.wav", h4, subtype="FLOAT")
    _run(src, "-k", f"ir:{ir}", "--ir-norm", "none", "-o", tmp_path / "out.wav")
    np.testing.assert_allclose(_read(tmp_path / "out.wav")[0], _true_stereo_reference(_read(src)[0], h4),
                               rtol=5e-6, atol=2e-6)  # float32 sums of 1500 taps
    _run(src, "-k", f"ir:{ir}", "-o", tmp_path / "norm.wav")  # one gain for all four channels
    ratio = _read(tmp_path / "norm.wav")[0] / np.where(_read(tmp_path / "out.wav")[0] == 0, np.nan,
                                                       _read(tmp_path / "out.wav")[0])
    energy = (h4 ** 2).sum(axis=0)
    assert np.nanmedian(ratio) == pytest.approx(1 / np.sqrt(max(energy[0] + energy[2], energy[1] + energy[3])),
                                                rel=1e-4)


def test_mono_into_a_stereo_room_and_stereo_channel_by_channel(tmp_path):
    h2 = _room(700, seed=4, channels=2)
    ir = _wav(tmp_path / "st.wav", h2, subtype="FLOAT")
    mono = _wav(tmp_path / "mono.wav", _music(1.0, channels=1), subtype="FLOAT")
    _run(mono, "-k", f"ir:{ir}", "--ir-norm", "none", "-o", tmp_path / "wide.wav")
    y, _ = _read(tmp_path / "wide.wav")
    xm = _read(mono)[0]
    assert y.shape == (len(xm), 2)
    np.testing.assert_allclose(y, np.stack([np.convolve(xm, h2[:, c])[:len(xm)] for c in range(2)], 1), atol=2e-6)
    stereo = _wav(tmp_path / "stereo.wav", _music(1.0, channels=2), subtype="FLOAT")
    _run(stereo, "-k", f"ir:{ir}", "--ir-norm", "none", "-o", tmp_path / "pair.wav")
    xs = _read(stereo)[0]
    np.testing.assert_allclose(_read(tmp_path / "pair.wav")[0],
                               np.stack([np.convolve(xs[:, c], h2[:, c])[:len(xs)] for c in range(2)], 1), atol=2e-6)


def test_a_layout_that_means_nothing_is_refused_with_the_layouts(tmp_path):
    ir = _wav(tmp_path / "three.wav", _room(100, channels=3), subtype="FLOAT")
    stereo = _wav(tmp_path / "in.wav", _music(0.5))
    line = _refused([stereo, "-k", f"ir:{ir}", "-o", tmp_path / "out.wav"], "3 channels", "true stereo", code=1)
    assert "mono" in line and "channel by channel" in line
    assert not (tmp_path / "out.wav").exists()


# ---------------------------------------------------------------------------- rate
def test_rate_resamples_as_resample_poly_with_the_stated_filter(tmp_path):
    from scipy.signal import resample_poly

    from convcli.engine.resample import design

    x = _music(1.0, channels=2)
    src = _wav(tmp_path / "in.wav", x, rate=48000, subtype="FLOAT")
    _run(src, "--rate", "44.1k", "-o", tmp_path / "out.wav")
    y, rate = _read(tmp_path / "out.wav")
    assert rate == 44100 and y.shape == (-(-len(x) * 147 // 160), 2)
    d = design(48000, 44100)
    want = resample_poly(_read(src)[0], 147, 160, axis=0, window=d.taps)
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_a_sine_is_still_the_same_note_at_the_new_rate(tmp_path):
    t = np.arange(44100 * 2) / 44100
    src = _wav(tmp_path / "in.wav", 0.5 * np.sin(2 * np.pi * 1234.5 * t), rate=44100)
    _run(src, "--rate", "48000", "-k", "identity", "-o", tmp_path / "out.flac")
    y, rate = _read(tmp_path / "out.flac")
    assert rate == 48000 and sf.info(str(tmp_path / "out.flac")).subtype == "PCM_16"
    spectrum = np.abs(np.fft.rfft(y[4800:-4800] * np.hanning(len(y) - 9600), 1 << 22))
    assert abs(np.argmax(spectrum) * 48000 / (1 << 22) - 1234.5) < 0.05


def test_explain_states_the_resamplers_filter(tmp_path):
    src = _wav(tmp_path / "in.wav", _music(0.2), rate=48000)
    result = _run(src, "--rate", "44100", "--explain")
    assert "passband: 0-20947.5 Hz, ripple" in result.stdout
    assert "stopband: from 22050 Hz, attenuated 1" in result.stdout
    assert "up 147, down 160" in result.stdout


def test_a_stride_that_aliases_says_so_and_points_at_rate(tmp_path):
    src = _wav(tmp_path / "in.wav", _music(0.5), rate=44100)
    result = _run(src, "-k", "lowpass:cutoff=10k", "--stride", "3", "-o", tmp_path / "out.wav")
    assert "--stride 3 makes the rate 14700 Hz" in result.stderr and "--rate 14700" in result.stderr
    quiet = _run(src, "-k", "lowpass:cutoff=5k", "--stride", "3", "-o", tmp_path / "ok.wav")
    assert "alias" not in quiet.stderr


# ---------------------------------------------------------------------------- in blocks
@pytest.mark.parametrize("args", [
    ["-k", "ir:{ir}", "--tail"],
    ["-k", "lowpass:cutoff=1k", "-k", "highpass:cutoff=50", "--mix", "0.4", "--gain", "3"],
    ["-k", "ir:{ir}", "--normalize-peak", "-1", "--rate", "11025"],
    ["-k", "ir:{ts}", "--tail", "0.1s"],
])
def test_a_file_over_the_memory_budget_gives_the_same_file_bit_for_bit(tmp_path, args):
    x = _music(30.0, channels=2, level=0.3)  # 240000 frames: several chunks of the long response
    src = _wav(tmp_path / "in.wav", x)
    ir = _wav(tmp_path / "ir.wav", _room(6000), subtype="FLOAT")
    ts = _wav(tmp_path / "ts.wav", _room(3000, channels=4), subtype="FLOAT")
    args = [a.format(ir=ir, ts=ts) for a in args]
    _run(src, *args, "-o", tmp_path / "whole.wav")
    streamed = _run(src, *args, "--memory-budget", "1M", "-o", tmp_path / "blocks.wav")
    assert "in blocks" in streamed.stderr  # it was over the budget, and said so
    np.testing.assert_array_equal(_read(tmp_path / "blocks.wav", "int16")[0], _read(tmp_path / "whole.wav", "int16")[0])
    assert leftovers(tmp_path) == []


def test_memory_stays_flat_however_long_the_file(tmp_path, monkeypatch):
    from convcli.engine import stream
    from convcli.io import audio
    from convcli.pipeline.filter import filter_file
    from convcli.pipeline.options import FilterOptions

    # Chunks and reads of 65536 frames: the test's files are many of them long, as hours of audio are of the real ones.
    monkeypatch.setattr(stream, "CHUNK_SAMPLES", 1 << 16)
    monkeypatch.setattr(audio, "READ_FRAMES", 1 << 16)
    ir = _wav(tmp_path / "ir.wav", _room(4000), subtype="FLOAT")
    peaks = []
    for seconds in (120, 480):
        src = _wav(tmp_path / f"in{seconds}.wav", _music(seconds, channels=2, level=0.1))
        options = FilterOptions(kernels=(f"ir:{ir}",), memory_budget=1 << 20)
        with peak_memory() as peak:
            filter_file(str(src), str(tmp_path / f"out{seconds}.wav"), options)
        peaks.append(peak())
    # 4x the samples, no more memory: a few chunks, well under the longer file's result in float32 (31 MB).
    assert peaks[1] < 1.15 * peaks[0] and peaks[1] < 480 * RATE * 2 * 4 / 2


def test_resampling_a_sound_in_memory_holds_no_whole_copy_of_it(tmp_path, monkeypatch):
    from convcli.pipeline import audio
    from convcli.pipeline.filter import filter_file
    from convcli.pipeline.options import AudioOptions, FilterOptions

    monkeypatch.setattr(audio, "BLOCK_FRAMES", 1 << 16)
    peaks = []
    for seconds in (120, 480):
        src = _wav(tmp_path / f"in{seconds}.wav", _music(seconds, channels=2, level=0.1))
        with peak_memory() as peak:
            filter_file(str(src), str(tmp_path / f"out{seconds}.wav"),
                        FilterOptions(kernels=(), audio=AudioOptions(rate=11025)))
        peaks.append(peak())
    # 360 s more of 16-bit stereo is 11.5 MB more samples read; a float32 copy of them or the whole result
    # held at once would add 23 MB or more.
    assert peaks[1] - peaks[0] < 1.25 * 360 * RATE * 2 * 2


# ---------------------------------------------------------------------------- refusals
def test_every_refusal_is_one_line(tmp_path):
    src = _wav(tmp_path / "in.wav", _music(0.5))
    ir = _wav(tmp_path / "ir.wav", _room(200), subtype="FLOAT")
    out = tmp_path / "out.wav"
    _refused([src, "-k", "box:3", "--mix", "0.5", "--stride", "2", "-o", out], "--mix", "--stride")
    _refused([src, "-k", "box:3", "--gain", "3", "--normalize-peak", "-1", "-o", out], "--normalize-peak", "--gain")
    _refused([src, "-k", "box:3", "--tail", "--padding", "valid", "-o", out], "--tail", "same or causal")
    _refused([src, "-k", "box:3", "--rate", "22050", "--stride", "2", "-o", out], "--rate", "--stride")
    _refused([src, "-k", f"ir:{ir}", "--normalize", "-o", out], "--normalize", "--ir-norm")
    _refused([src, "-k", "box:3", "--mix", "2", "-o", out], "--mix", "0 to 1")
    _refused([src, "-k", "box:3", "--normalize-peak", "+1", "-o", out], "--normalize-peak")
    _refused([src, "-k", "box:3", "--ir-norm", "loud", "-o", out], "--ir-norm", "energy, peak, none")
    _refused([src, "-k", "box:3", "--tail", "2 fortnights", "-o", out], "--tail", "duration")
    _refused([src, "--rate", "44101", "-o", out], "--rate", "ratio")
    _refused([src, "-o", out], "kernel", "--rate")
    _refused([src, "-k", f"ir:{ir}", "-o", ir], "is the kernel file", code=1)
    png = tmp_path / "in.png"
    from PIL import Image

    Image.new("L", (8, 8)).save(png)
    _refused([png, "-k", "box:3", "--mix", "0.5", "-o", tmp_path / "o.png"], "--mix", "applies to audio", "image")
    _refused([src, "-k", "median:3", "--memory-budget", "20K", "-o", out], "median:3", "memory budget", code=1)
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_long_wav_is_written_as_rf64(tmp_path, monkeypatch):
    from convcli.io import audio

    monkeypatch.setattr(audio, "WAV_MAX_BYTES", 1000)  # as if the result were over 4 GiB
    src = _wav(tmp_path / "in.wav", _music(0.5))
    result = _run(src, "-k", "box:3", "-o", tmp_path / "out.wav")
    assert "RF64" in result.stderr
    assert sf.info(str(tmp_path / "out.wav")).format == "RF64"
    np.testing.assert_array_equal(_read(tmp_path / "out.wav")[0].shape, (4000, 2))
