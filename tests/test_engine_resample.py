"""Resampling as a polyphase convolution (engine.resample): scipy's resample_poly, the filter's stated quality, a sine."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import signal as ss

from convcli.engine.resample import Resampler, design, resample
from convcli.errors import ParameterError

RATES = [(48000, 44100), (44100, 48000), (44100, 22050), (22050, 44100), (8000, 44100), (96000, 44100)]


@pytest.mark.parametrize("rate_in, rate_out", RATES)
def test_equals_scipy_resample_poly_with_the_same_filter(rate_in, rate_out):
    d = design(rate_in, rate_out)
    x = np.random.default_rng(rate_in + rate_out).standard_normal(3001)
    ours = resample(x, d, dtype=np.float64)
    theirs = ss.resample_poly(x, d.up, d.down, window=d.taps)  # scipy: unit-gain taps, times up
    assert ours.shape == theirs.shape == (-(-3001 * d.up // d.down),)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("rate_in, rate_out", RATES)
def test_the_stated_passband_and_stopband_hold(rate_in, rate_out):
    d = design(rate_in, rate_out)
    nyquist = min(rate_in, rate_out) / 2
    assert (d.passband, d.stopband) == (0.95 * nyquist, nyquist)
    # An independent evaluation of the response: scipy's freqz on a dense grid of both bands.
    fs = rate_in * d.up
    _, inside = ss.freqz(d.taps, worN=np.linspace(0, d.passband, 4000), fs=fs)
    _, outside = ss.freqz(d.taps, worN=np.linspace(d.stopband, fs / 2, 40000), fs=fs)
    assert np.max(np.abs(20 * np.log10(np.abs(inside)))) <= d.ripple * 1.01 + 1e-9 < 1e-4
    assert -20 * np.log10(np.max(np.abs(outside))) >= d.attenuation - 0.1 >= 119


@pytest.mark.parametrize("rate_in, rate_out, tone", [(48000, 44100, 1000.0), (44100, 48000, 15000.0),
                                                       (96000, 44100, 20000.0)])
def test_a_sine_keeps_its_frequency_and_level(rate_in, rate_out, tone):
    seconds = 2
    t = np.arange(rate_in * seconds) / rate_in
    y = resample(np.sin(2 * np.pi * tone * t), design(rate_in, rate_out), dtype=np.float64)
    assert len(y) == rate_out * seconds
    middle = y[rate_out // 2:-rate_out // 2]  # away from the zeros beyond both ends
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle)), 1 << 22))
    peak = np.argmax(spectrum) * rate_out / (1 << 22)
    assert abs(peak - tone) < 0.5
    assert np.max(np.abs(middle)) == pytest.approx(1.0, abs=1e-4)


def test_a_sweep_leaves_no_alias_in_the_band():
    """A sweep to 24 kHz resampled to 44.1 kHz: what lies above 22.05 kHz is gone, not folded below it."""
    rate_in, rate_out = 48000, 44100
    t = np.arange(rate_in * 2) / rate_in
    sweep = ss.chirp(t, 21000, t[-1], 24000)  # only 21-24 kHz: everything above 22.05 kHz would alias
    y = resample(sweep, design(rate_in, rate_out), dtype=np.float64)
    freqs = np.fft.rfftfreq(len(y), 1 / rate_out)
    power = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    alias = power[freqs < 20000].sum() / power.sum()
    assert 10 * np.log10(alias) < -100


@given(sizes=st.lists(st.integers(1, 20000), min_size=1, max_size=5), channels=st.sampled_from([None, 2]),
       rates=st.sampled_from(RATES), n=st.integers(1, 60000))
def test_blocks_of_any_size_give_the_same_samples(sizes, channels, rates, n):
    d = design(*rates, attenuation=60)  # shorter filters keep the property test quick
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n,) if channels is None else (n, channels)).astype(np.float32)
    whole = resample(x, d, channel_axis=None if channels is None else -1)
    r = Resampler(d, n, channels=channels)
    outs, i, k = [], 0, 0
    while i < n:
        outs.append(r.push(x[i:i + sizes[k % len(sizes)]]))
        i, k = i + sizes[k % len(sizes)], k + 1
    outs.append(r.finish())
    np.testing.assert_array_equal(np.concatenate(outs), whole)


def test_an_awkward_ratio_is_refused_in_one_line():
    with pytest.raises(ParameterError, match="44100 Hz to 44101 Hz is a ratio of 44101/44100") as info:
        design(44100, 44101)
    assert info.value.subject == "--rate"
