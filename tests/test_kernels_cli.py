"""The kernel library as users reach it: `convcli filter -k`, `convcli kernels list|show`, completion."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image
from scipy import signal

from conftest import convcli
from convcli.kernels import resolve

SHAPES = {1: (40,), 2: (11, 13), 3: (6, 7, 8)}


def run(*args, env=None):
    return convcli(*args, env=env)


def filter_npy(tmp_path, x, *specs, extra=()):
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, x)
    ks = [a for s in specs for a in ("-k", s)]
    result = run("filter", src, *ks, "--pad-mode", "symmetric", *extra, "-o", dst)
    assert result.exit_code == 0, result.output
    return np.load(dst)


def grad(x, f):
    return ndi.generic_gradient_magnitude(x, f, mode="reflect")


# The definitions of issue 3, each checked on a .npy through `convcli filter`
# in 1D, 2D and 3D (engine `symmetric` == scipy `reflect`).
REFERENCES = {
    "gaussian:sigma=1.5": lambda x: ndi.gaussian_filter(x, 1.5, mode="reflect"),
    "box:3": lambda x: ndi.uniform_filter(x, 3, mode="reflect"),
    "laplacian": lambda x: ndi.laplace(x, mode="reflect"),
    "sobel-x": lambda x: ndi.sobel(x, axis=-1, mode="reflect"),
    "prewitt-x": lambda x: ndi.prewitt(x, axis=-1, mode="reflect"),
    "sobel": lambda x: grad(x, ndi.sobel),
    "prewitt": lambda x: grad(x, ndi.prewitt),
    "log:sigma=1.2": lambda x: ndi.gaussian_laplace(x, 1.2, mode="reflect"),
    "dog:1,2": lambda x: ndi.gaussian_filter(x, 1, mode="reflect") - ndi.gaussian_filter(x, 2, mode="reflect"),
    "sharpen:0.5": lambda x: x - 0.5 * ndi.laplace(x, mode="reflect"),
    "unsharp:sigma=1,amount=2": lambda x: x + 2 * (x - ndi.gaussian_filter(x, 1, mode="reflect")),
    "binomial:1": lambda x: separable(x, [0.25, 0.5, 0.25]),
    "identity": lambda x: x,
}


def separable(x, row):
    for axis in range(x.ndim):
        x = ndi.correlate1d(x, row, axis=axis, mode="reflect")
    return x


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("spec", sorted(REFERENCES))
def test_filter_named_kernels_match_scipy(tmp_path, spec, ndim):
    x = np.random.default_rng(ndim).normal(size=SHAPES[ndim])
    got = filter_npy(tmp_path, x, spec)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, REFERENCES[spec](x), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("spec, axis", [("sobel-y", -2), ("sobel-z", -3)])
def test_filter_gradient_components_on_a_volume(tmp_path, spec, axis):
    x = np.random.default_rng(3).normal(size=SHAPES[3])
    np.testing.assert_allclose(filter_npy(tmp_path, x, spec), ndi.sobel(x, axis=axis, mode="reflect"), atol=1e-10)


def test_filter_chain_applies_kernels_in_order(tmp_path):
    x = np.random.default_rng(5).normal(size=SHAPES[2])
    want = grad(ndi.gaussian_filter(x, 1.0, mode="reflect"), ndi.sobel)
    np.testing.assert_allclose(filter_npy(tmp_path, x, "gaussian:sigma=1", "sobel"), want, atol=1e-10)


def test_filter_kernel_from_the_user_path(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "ridge.txt").write_text("# description: my ridge detector\n-1 2 -1\n")
    x = np.random.default_rng(6).normal(size=SHAPES[2])
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, x)
    result = run("filter", src, "-k", "ridge", "--pad-mode", "symmetric", "-o", dst,
                 env={"CONVCLI_KERNEL_PATH": str(folder)})
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(dst), ndi.correlate1d(x, [-1.0, 2, -1], axis=-1, mode="reflect"), atol=1e-12)


def test_filter_physical_sigma_on_an_anisotropic_tiff_volume(tmp_path):
    from convcli import io
    from convcli.io.signal import Signal

    x = np.random.default_rng(7).random(SHAPES[3]).astype(np.float32)
    src, dst = tmp_path / "vol.tif", tmp_path / "out.npy"
    io.write(Signal(x, kind="volume", spacing=(3.0, 1.0, 0.5)), str(src))
    assert io.read(str(src)).spacing == pytest.approx((3.0, 1.0, 0.5))
    result = run("filter", src, "-k", "gaussian:sigma=1.5mm", "--pad-mode", "symmetric", "-o", dst)
    assert result.exit_code == 0, result.output
    want = ndi.gaussian_filter(x.astype(np.float64), (0.5, 1.5, 3.0), mode="reflect")
    np.testing.assert_allclose(np.load(dst), want, rtol=1e-5, atol=1e-6)


def test_filter_lowpass_on_audio_uses_its_sample_rate(tmp_path):
    import soundfile

    rate = 8000
    t = np.arange(800) / rate
    x = (0.4 * np.sin(2 * np.pi * 200 * t) + 0.4 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    soundfile.write(src, x, rate, subtype="FLOAT")
    result = run("filter", src, "-k", "lowpass:cutoff=1k,taps=63", "--pad-mode", "symmetric", "-o", dst)
    assert result.exit_code == 0, result.output
    got, got_rate = soundfile.read(dst, dtype="float64")
    want = ndi.correlate1d(x.astype(np.float64), signal.firwin(63, 1000, fs=rate), mode="reflect")
    assert got_rate == rate
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("spec, message", [
    ("gausian", "did you mean gaussian"),
    ("lowpass:2k", "1D"),
    ("[[1,2],[3]]", "ragged"),
    ("sobel-x", "--range offset"),
])
def test_filter_refuses_bad_kernels_with_one_line_and_no_output(tmp_path, spec, message):
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, np.zeros((5, 5)))
    extra = ["--normalize"] if spec == "sobel-x" else []
    proc = subprocess.run([sys.executable, "-m", "convcli", "filter", str(src), "-k", spec, *extra, "-o", str(dst)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"convcli: error: {spec}: ")
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not dst.exists()


def test_filter_in_a_subprocess_with_a_named_kernel(tmp_path):
    x = np.random.default_rng(8).normal(size=SHAPES[2])
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, x)
    proc = subprocess.run([sys.executable, "-m", "convcli", "filter", str(src), "-k", "sobel", "--pad-mode",
                           "symmetric", "-o", str(dst)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(dst), grad(x, ndi.sobel), atol=1e-10)


# ---------------------------------------------------------------- kernels list


def test_kernels_list_table_and_json(tmp_path):
    result = run("kernels", "list")
    assert result.exit_code == 0
    for name in ("gaussian", "sobel-x", "kirsch", "lowpass", "box (blur, mean)"):
        assert name in result.output
    rows = json.loads(run("kernels", "list", "--json").output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["gaussian"]["parameters"]["sigma"] == 1
    assert by_name["lowpass"]["parameters"]["cutoff"] is None and by_name["lowpass"]["dimensions"] == [1]
    assert by_name["kirsch"]["dimensions"] == [2] and by_name["kirsch"]["kind"] == "library"
    assert by_name["sobel-z"]["range_default"] == "offset"
    assert all(r["description"] for r in rows)


def test_kernels_list_shows_user_kernels_from_the_config_folder(tmp_path):
    config = tmp_path / "config"
    (config / "convcli" / "kernels").mkdir(parents=True)
    (config / "convcli" / "kernels" / "cross.txt").write_text("# description: a plus sign\n0 1 0\n1 1 1\n0 1 0\n")
    rows = json.loads(run("kernels", "list", "--json", env={"XDG_CONFIG_HOME": str(config)}).output)
    cross = next(r for r in rows if r["name"] == "cross")
    assert cross["kind"] == "user" and cross["dimensions"] == [2] and cross["description"] == "a plus sign"


# ---------------------------------------------------------------- kernels show


def test_kernels_show_2d_table_and_facts():
    result = run("kernels", "show", "sobel-x")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [ln.split() for ln in lines if ln.split() and ln.split()[0] in ("-1", "-2")] == \
        [["-1", "0", "1"], ["-2", "0", "2"], ["-1", "0", "1"]]
    assert "sum: 0" in result.output and "separable: yes" in result.output and "rank: 1" in result.output
    assert "offset" in result.output


def test_kernels_show_3d_slice_by_slice_and_not_separable():
    result = run("kernels", "show", "laplacian", "--ndim", "3")
    assert result.exit_code == 0
    assert "slice 1 of 3" in result.output and "slice 3 of 3" in result.output
    assert "separable: no" in result.output and "rank: [2, 2, 2]" in result.output


def test_kernels_show_json_gives_the_weights():
    facts = json.loads(run("kernels", "show", "gaussian:sigma=1,0.5", "--json").output)
    np.testing.assert_array_equal(facts["weights"][0], resolve("gaussian:sigma=1,0.5", ndim=2).weights[0])
    assert facts["shape"] == [9, 5] and facts["separable"] is True
    kirsch = json.loads(run("kernels", "show", "kirsch", "--json").output)
    assert kirsch["kernels"] == 8 and len(kirsch["weights"]) == 8 and kirsch["combine"] == "max"


def test_kernels_show_audio_design_needs_a_rate_and_plots_its_response():
    result = run("kernels", "show", "lowpass:2k")
    assert result.exit_code == 2
    result = run("kernels", "show", "lowpass:2k", "--rate", "16000")
    assert result.exit_code == 0, result.output
    assert "frequency response" in result.output and "8k Hz" in result.output and "█" in result.output


def test_kernels_show_units_need_rate_or_spacing():
    facts = json.loads(run("kernels", "show", "gaussian:sigma=2ms", "--rate", "1000", "--json").output)
    assert facts["ndim"] == 1 and facts["shape"] == [17]
    facts = json.loads(run("kernels", "show", "gaussian:sigma=1mm", "--spacing", "2,1,0.5", "--json").output)
    assert facts["shape"] == [5, 9, 17]


def test_kernels_show_plot_writes_pngs(tmp_path):
    heat = tmp_path / "kirsch.png"
    assert run("kernels", "show", "kirsch", "--plot", heat).exit_code == 0
    with Image.open(heat) as im:
        assert im.format == "PNG" and im.width > im.height > 20
    response = tmp_path / "lp.png"
    assert run("kernels", "show", "bandpass:low=300,high=3k", "--rate", "16000", "--plot", response).exit_code == 0
    with Image.open(response) as im:
        assert im.format == "PNG" and im.size == (640, 360)
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 3  # a curve, not blank


def test_kernels_show_plot_refuses_other_formats_and_writes_nothing(tmp_path):
    dest = tmp_path / "k.jpg"
    result = run("kernels", "show", "sobel", "--plot", dest)
    assert result.exit_code == 2 and not dest.exists()


def test_kernels_show_errors_exit_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "convcli", "kernels", "show", "kirch"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "convcli: error: kirch: unknown kernel name; did you mean kirsch? " \
                          "(convcli kernels list shows them all)\n"
    proc = subprocess.run([sys.executable, "-m", "convcli", "kernels", "show", "kirsch", "--ndim", "3"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "2D inputs only" in proc.stderr


# ---------------------------------------------------------------- completion, start-up


def test_shell_completion_of_kernel_names():
    env = {**os.environ, "_CONVCLI_COMPLETE": "complete_bash", "COMP_WORDS": "convcli kernels show sob",
           "COMP_CWORD": "3"}
    proc = subprocess.run([sys.executable, "-m", "convcli"], env=env, capture_output=True, text=True, timeout=60)
    names = proc.stdout.split()
    assert {"sobel", "sobel-x", "sobel-y", "sobel-z"} <= set(names), proc.stdout + proc.stderr
    assert "gaussian" not in names


def test_kernels_help_does_not_import_numpy():
    code = ("import sys\nfrom convcli.cli import main\n"
            "try:\n    main(['kernels', 'show', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('numpy' in sys.modules, 'PIL' in sys.modules, 'scipy' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "False False False"


def test_kernels_show_with_a_frequency_response_imports_no_scipy():
    # scipy.signal's import alone took 1.7 s: the response is numpy's FFT, checked against freqz here.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "convcli", "kernels", "show", "lowpass:cutoff=2k",
                           "--rate", "44100"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "frequency response" in proc.stdout
    assert " scipy" not in proc.stderr
    from scipy import signal

    from convcli.kernels.plot import frequency_response
    for taps in (5, 101, 3000):  # fewer and more taps than the 512 frequencies
        w = np.random.default_rng(taps).standard_normal(taps)
        freqs, db = frequency_response(w, 44100)
        ref_f, h = signal.freqz(w, worN=512, fs=44100, include_nyquist=True)
        np.testing.assert_allclose(freqs, ref_f, rtol=0, atol=1e-9)
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(db, np.maximum(20 * np.log10(np.abs(h)), -120), rtol=0, atol=1e-6)


def test_frequency_ticks_are_round_numbers():
    from convcli.kernels.plot import nice_ticks

    assert nice_ticks(22050) == [0, 5000, 10000, 15000, 20000]
    assert nice_ticks(8000) == [0, 2000, 4000, 6000, 8000]
    assert nice_ticks(0.5) == [0, 0.1, 0.2, 0.3, 0.4, 0.5]


def test_plots_have_a_colour_bar_numbers_only_where_they_fit_and_labelled_slices(tmp_path):
    def picture(*args):
        dest = tmp_path / "p.png"
        assert run("kernels", "show", *args, "--plot", dest).exit_code == 0
        with Image.open(dest) as im:
            return np.asarray(im.convert("RGB")).astype(int)

    big = picture("gaussian:sigma=2")  # 17x17: cells too small for their numbers
    right = big[:, -90:]
    reds = {tuple(c) for c in right.reshape(-1, 3) if c[0] > c[1] + 20}
    assert len(reds) > 50  # a ramp of shades: the colour bar
    grid = big[:, : big.shape[1] - 90]
    assert not (grid.sum(axis=2) < 60).any()  # no black text drawn over the cells
    small = picture("kirsch")  # 3x3 cells: their numbers are written
    assert (small[:, : small.shape[1] - 90].sum(axis=2) < 60).sum() > 100
    volume = picture("gaussian:sigma=1", "--ndim", "3")
    assert volume.shape[1] < 2000  # nine slices side by side stay on a screen
    labels = volume[:16, : volume.shape[1] - 90]
    assert (labels.sum(axis=2) < 300).sum() > 9 * 5  # a label above each slice
