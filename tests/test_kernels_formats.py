"""The other kernel formats (CSV, libvips .mat, SoX FIR, impulse responses, ImageMagick) and the user's folders."""
import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convcli.errors import UsageError
from convcli.kernels import resolve
from convcli.kernels.catalog import catalog, complete, natural_ndims

LAPLACE = np.array([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])


# ---------------------------------------------------------------- text round trip


def _write_text(w):
    planes = [w.reshape(1, -1)] if w.ndim == 1 else [w] if w.ndim == 2 else list(w)
    return "\n\n".join("\n".join(", ".join(repr(float(v)) for v in row) for row in p) for p in planes) + "\n"


@settings(max_examples=40)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=5),
                  elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)))
def test_text_files_round_trip_exactly(tmp_path_factory, w):
    path = tmp_path_factory.mktemp("rt") / "k.csv"
    path.write_text(_write_text(w))
    np.testing.assert_array_equal(resolve(str(path), ndim=w.ndim).weights[0], w)


# ---------------------------------------------------------------- CSV, libvips, SoX, ImageMagick


def test_csv_file(tmp_path):
    path = tmp_path / "lap.csv"
    path.write_text("0,1,0\r\n1,-4,1\r\n0,1,0\r\n")
    np.testing.assert_array_equal(resolve(str(path), ndim=2).weights[0], LAPLACE)


def test_libvips_matrix_with_scale(tmp_path):
    path = tmp_path / "blur.mat"
    path.write_text("3 3 16 0\n1 2 1\n2 4 2\n1 2 1\n")
    w = resolve(str(path), ndim=2).weights[0]
    np.testing.assert_array_equal(w, np.outer([1, 2, 1], [1, 2, 1]) / 16)
    assert w.sum() == 1


@pytest.mark.parametrize("text, message", [
    ("3 3 1 128\n" + "1 1 1\n" * 3, "offset 128 is not supported"),
    ("3 3 0\n" + "1 1 1\n" * 3, "scale 0"),
    ("3 2\n1 1 1\n", "says 2 rows, the file has 1"),
    ("3 1\n1 1\n", "says 3x1"),
    ("three by three\n", "not a number"),
])
def test_libvips_matrix_errors(tmp_path, text, message):
    path = tmp_path / "bad.mat"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as info:
        resolve(str(path), ndim=2)
    assert info.value.subject == str(path)


def test_sox_fir_coefficients_one_per_line(tmp_path):
    path = tmp_path / "eq.fir"
    path.write_text("# SoX fir coefficients\n0.25\n0.5\n0.25\n")
    np.testing.assert_array_equal(resolve(str(path), ndim=1).weights[0], [0.25, 0.5, 0.25])
    column = tmp_path / "column.txt"  # a single column of a text file is a 1D kernel too
    column.write_text("1\n2\n3\n")
    np.testing.assert_array_equal(resolve(str(column), ndim=1).weights[0], [1, 2, 3])
    assert resolve(str(column), ndim=2).weights[0].shape == (3, 1)


@pytest.mark.parametrize("spec", ["3x3: 0,1,0 1,-4,1 0,1,0", "3: 0 1 0  1 -4 1  0 1 0", "3x3+1+1:0,1,0,1,-4,1,0,1,0"])
def test_imagemagick_inline(spec):
    k = resolve(spec, ndim=2)
    assert k.name == "inline"
    np.testing.assert_array_equal(k.weights[0], LAPLACE)


def test_imagemagick_width_and_height_and_nan():
    w = resolve("3x1: 1,nan,-1", ndim=2).weights[0]
    np.testing.assert_array_equal(w, [[1, 0, -1]])
    assert resolve("3x1: 1,0,-1", ndim=1).weights[0].shape == (3,)


@pytest.mark.parametrize("spec, message", [("3x3: 1,2,3", "needs 9 values, 3 were given"),
                                           ("3x3+0+0: 0,1,0,1,-4,1,0,1,0", "off-centre"),
                                           ("2x1: 1,x", "not a number")])
def test_imagemagick_errors(spec, message):
    with pytest.raises(UsageError, match=message):
        resolve(spec, ndim=2)


# ---------------------------------------------------------------- impulse responses


def _wav(path, h, rate=8000, channels=1):
    data = h if channels == 1 else np.stack([h] * channels, axis=1)
    soundfile.write(path, data, rate, subtype="FLOAT")
    return path


@pytest.mark.parametrize("prefix, ext", [("ir:", ".wav"), ("ir:", ".flac"), ("", ".wav")])
def test_impulse_response_is_a_causal_convolution(tmp_path, prefix, ext):
    h = np.array([1.0, 0.5, -0.25, 0.125])
    path = tmp_path / f"room{ext}"
    soundfile.write(path, h, 8000, subtype="FLOAT" if ext == ".wav" else "PCM_24")
    k = resolve(f"{prefix}{path}", ndim=1, sample_rate=8000, ir_norm="none")
    assert k.name == f"ir:room{ext}" and k.causal
    x = np.random.default_rng(0).normal(size=50)
    got = k.apply(x, pad_mode="zeros")
    want = np.convolve(x, soundfile.read(path)[0])[: x.size]  # the echo follows the sound
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert k.shape == (4,)  # the response itself, not padded to centre it


@pytest.mark.parametrize("norm, level", [("energy", lambda h: np.sqrt((h * h).sum())), ("peak", lambda h: 1.0),
                                         ("none", lambda h: np.abs(h).max())])
def test_impulse_response_levels(tmp_path, norm, level):
    h = np.array([-0.2, 0.5, -0.25, 0.125, 0.05])  # a negative first tap: its sum is no measure of loudness
    path = _wav(tmp_path / "room.wav", h)
    w = resolve(f"ir:{path}", ndim=1, sample_rate=8000, ir_norm=norm).weights[0]
    np.testing.assert_allclose(w[::-1] / np.abs(w).max(), h / np.abs(h).max(), rtol=1e-6)  # polarity kept
    assert np.isclose(np.sqrt((w * w).sum()) if norm == "energy" else np.abs(w).max(), level(h) if norm == "none"
                      else 1.0, rtol=1e-6)


def test_impulse_response_at_another_rate_is_resampled(tmp_path):
    h = np.zeros(480)
    h[0], h[240] = 1.0, 0.5  # a click and its echo 5 ms later
    path = _wav(tmp_path / "room.wav", h, rate=48000)
    k = resolve(f"ir:{path}", ndim=1, sample_rate=24000, ir_norm="none")
    assert "resampled from 48000 Hz" in k.notes[0]
    w = k.weights[0][::-1]
    assert w.size == 240 and np.argmax(w[60:]) + 60 == 120  # the echo still 5 ms after the click


def test_impulse_response_errors(tmp_path):
    three = _wav(tmp_path / "three.wav", np.array([1.0, 0.5]), channels=3)
    with pytest.raises(UsageError, match="3 channels does not fit an input of 2 channels; the layouts are: a mono"
                       ) as info:
        resolve(f"ir:{three}", ndim=1, channels=2)
    assert info.value.subject == str(three)
    mono = _wav(tmp_path / "mono.wav", np.array([1.0, 0.5]), rate=8000)
    with pytest.raises(UsageError, match="filters audio"):
        resolve(f"ir:{mono}", ndim=2)
    with pytest.raises(UsageError, match="no such impulse-response file"):
        resolve(f"ir:{tmp_path / 'missing.wav'}", ndim=1)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really")
    with pytest.raises(UsageError, match="cannot read the impulse response"):
        resolve(f"ir:{junk}", ndim=1)
    with pytest.raises(UsageError, match="not an impulse response's loudness") as info:
        resolve(f"ir:{mono}", ndim=1, normalize=True)
    assert info.value.subject == "--normalize"
    silent = _wav(tmp_path / "silent.wav", np.zeros(4))
    with pytest.raises(UsageError, match="silent"):
        resolve(f"ir:{silent}", ndim=1)
    assert resolve(f"ir:{silent}", ndim=1, ir_norm="none").weights[0].tolist() == [0.0] * 4


# ---------------------------------------------------------------- the user's folders


def test_kernel_path_finds_files_by_name_and_wins_over_the_library(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    np.save(first / "edge.npy", LAPLACE)
    (second / "edge.txt").write_text("1 2 1\n")
    (second / "wide.json").write_text('{"weights": [[1, 1, 1, 1, 1]], "description": "five wide"}')
    (first / "sobel-x.txt").write_text("# description: my own sobel-x\n## 2d\n1 0 -1\n2 0 -2\n1 0 -1\n")
    monkeypatch.setenv("CONVCLI_KERNEL_PATH", f"{first}:{second}")
    np.testing.assert_array_equal(resolve("edge", ndim=2).weights[0], LAPLACE)
    assert resolve("wide", ndim=2).weights[0].shape == (1, 5)
    assert resolve("sobel-x", ndim=2).weights[0][0, 0] == 1
    rows = {r["name"]: r for r in catalog()}
    assert rows["wide"]["description"] == "five wide" and rows["wide"]["kind"] == "user"
    assert rows["sobel-x"]["kind"] == "user"
    assert "edge" in complete("ed") and natural_ndims("edge") == (2,)


def test_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "convcli" / "kernels"
    folder.mkdir(parents=True)
    (folder / "ridge.txt").write_text("## 1d\n-1 2 -1\n\n## 2d\n-1 2 -1\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("CONVCLI_KERNEL_PATH", raising=False)
    assert resolve("ridge", ndim=1).weights[0].shape == (3,)
    assert resolve("ridge", ndim=2).weights[0].shape == (1, 3)
    with pytest.raises(UsageError, match="1D, 2D inputs only"):
        resolve("ridge", ndim=3)


def test_broken_user_file_is_reported_not_fatal_to_listing(tmp_path, monkeypatch):
    (tmp_path / "broken.txt").write_text("1 2\n3\n")
    monkeypatch.setenv("CONVCLI_KERNEL_PATH", str(tmp_path))
    row = next(r for r in catalog() if r["name"] == "broken")
    assert row["description"].startswith("unreadable: row 2 (line 2) has 1 numbers")
    with pytest.raises(UsageError, match="row 2"):
        resolve("broken", ndim=2)


def test_declarations_are_checked(tmp_path, monkeypatch):
    (tmp_path / "liar.txt").write_text("# sum: 1\n# symmetry: symmetric\n1 0 -1\n")
    (tmp_path / "many.txt").write_text("## 2d\n1 0 -1\n## 2d\n1 0 -1\n")
    (tmp_path / "badmeta.txt").write_text("# range: sideways\n1\n")
    monkeypatch.setenv("CONVCLI_KERNEL_PATH", str(tmp_path))
    with pytest.raises(UsageError, match="sum to 0, but the file declares sum 1"):
        resolve("liar", ndim=1)
    with pytest.raises(UsageError, match="combine"):
        resolve("many", ndim=2)
    with pytest.raises(UsageError, match="range: sideways"):
        resolve("badmeta", ndim=1)
