"""lowpass / highpass / bandpass designed in numpy, held to scipy.signal.firwin and get_window to 1e-12."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import signal

from convcli.errors import UsageError
from convcli.kernels import generators, resolve

NUMPY_WINDOWS = ["hamming", "hamm", "ham", "hann", "han", "blackman", "black", "blk", "bartlett", "bart", "brt",
                 "boxcar", "box", "ones", "rect", "rectangular", "kaiser(8)", "ksr(0.5)", "kaiser(0)", "kaiser(14)"]
SCIPY_WINDOWS = ["tukey(0.3)", "flattop", "nuttall", "gaussian(7)", "triang", "cosine"]
TAPS = [1, 2, 3, 4, 31, 64, 101, 1001]


class _Ctx:
    spec = "test"


def _scipy_window(text: str):
    name, _, arg = text.partition("(")
    return (name, float(arg.rstrip(")"))) if arg else name


@pytest.mark.parametrize("window", NUMPY_WINDOWS + SCIPY_WINDOWS)
@pytest.mark.parametrize("taps", TAPS)
def test_windows_equal_scipy_get_window_symmetric(window, taps):
    ours = generators.symmetric_window(_Ctx, window, taps)
    np.testing.assert_allclose(ours, signal.get_window(_scipy_window(window), taps, fftbins=False),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("window", ["hamming", "hann", "blackman", "bartlett", "boxcar", "kaiser(8)", "tukey(0.3)"])
@pytest.mark.parametrize("taps", TAPS)
@pytest.mark.parametrize("rate", [8000, 44100, 96000])
def test_designs_equal_scipy_firwin(window, taps, rate):
    designs = [(f"lowpass:cutoff={rate / 7:.6f}", rate / 7, True),
               (f"highpass:cutoff={rate / 5:.6f}", rate / 5, False),
               (f"bandpass:low={rate / 40:.6f},high={rate / 3:.6f}", [rate / 40, rate / 3], False)]
    for spec, cutoff, pass_zero in designs:
        if not pass_zero and taps % 2 == 0:
            continue  # refused (tested below)
        if taps == 2 and window in ("hann", "bartlett", "tukey(0.3)"):
            continue  # zero at both taps: refused (tested below)
        got = resolve(f"{spec},taps={taps},window={window}", ndim=1, sample_rate=rate).weights[0]
        want = signal.firwin(taps, np.asarray(cutoff, dtype=np.float64).round(6), window=_scipy_window(window),
                             pass_zero=pass_zero, fs=rate)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max(), err_msg=spec)


@pytest.mark.parametrize("window, message", [
    ("nosuchwindow", "window=nosuchwindow"),
    ("kaiser", "window=kaiser"),  # Kaiser needs its beta
    ("hamming(3)", "window=hamming\\(3\\)"),  # and Hamming takes none
    ("kaiser(x)", "name\\(number\\)"),
])
def test_bad_windows_are_usage_errors_naming_the_window(window, message):
    with pytest.raises(UsageError, match=message) as info:
        resolve(f"lowpass:2k,window={window}", ndim=1, sample_rate=16000)
    assert info.value.subject == f"lowpass:2k,window={window}"


def test_the_common_designs_never_import_scipy():
    code = ("import sys; from convcli.kernels import resolve; "
            "[resolve(s, ndim=1, sample_rate=44100) for s in ('lowpass:4k', 'highpass:300,window=hann', "
            "'bandpass:low=300,high=3k,window=kaiser(8)', 'lowpass:2k,window=blackman,taps=1001')]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("spec", ["lowpass:2k,taps=2,window=hann", "lowpass:2k,taps=2,window=bartlett",
                                  "lowpass:2k,taps=2,window=tukey(0.3)"])
def test_a_window_zero_at_every_tap_is_refused_not_a_nan_kernel(spec):
    with pytest.raises(UsageError, match="use more taps") as info:
        resolve(spec, ndim=1, sample_rate=16000)
    assert info.value.subject == spec
