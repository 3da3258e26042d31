"""`convcli filter` on real media, as users run it: alpha, range, pipes, in-place, broken files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from convcli import correlate
from conftest import convcli, convcli_process, leftovers
from convcli.io.samples import to_samples

BOX = "[[1,1,1],[1,1,1],[1,1,1]]"  # with --normalize: a 3x3 mean
EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def run(*args):
    return convcli("filter", *map(str, args))


def run_process(*args, **kwargs):
    return convcli_process("filter", *args, **kwargs)


@pytest.fixture
def logo(tmp_path):
    """An opaque red square in a transparent field whose hidden colour is pure green."""
    rgba = np.zeros((15, 15, 4), np.uint8)
    rgba[..., 1] = 255  # green, but fully transparent
    rgba[4:11, 4:11] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    return tmp_path / "logo.png", rgba


def _box(x, **kw):
    return correlate(x.astype(np.float32), np.full((3, 3), 1 / 9), channel_axis=-1, **kw)


def test_alpha_premultiply_never_bleeds_hidden_colour(tmp_path, logo):
    path, rgba = logo
    result = run(path, "-k", BOX, "--normalize", "-o", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "p.png"))
    assert Image.open(tmp_path / "p.png").mode == "RGBA"
    visible = out[..., 3] > 0
    assert out[visible, 1].max() == 0  # no green anywhere something shows
    assert 0 < out[3, 5, 3] < 255  # soft edges
    # The definition: filter colour * alpha and alpha, divide back by the filtered alpha.
    a = rgba[..., 3:].astype(np.float32) / 255
    filtered = _box(np.concatenate([rgba[..., :3] * a, rgba[..., 3:]], axis=-1))
    fa = filtered[..., 3:] / 255
    colour = np.where(filtered[..., 3:] > 0.5, filtered[..., :3] / np.maximum(fa, 1e-12), 0)
    want = to_samples(np.concatenate([colour, filtered[..., 3:]], axis=-1), np.uint8, "clip")[0]
    assert np.abs(out.astype(int) - want.astype(int)).max() <= 1


def test_alpha_keep_leaves_alpha_exactly(tmp_path, logo):
    path, rgba = logo
    assert run(path, "-k", BOX, "--normalize", "--alpha", "keep", "-o", tmp_path / "k.png").exit_code == 0
    out = np.asarray(Image.open(tmp_path / "k.png"))
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    want = to_samples(_box(rgba[..., :3]), np.uint8, "clip")[0]
    assert np.abs(out[..., :3].astype(int) - want.astype(int)).max() <= 1
    # With stride the alpha is resampled onto the output grid, never filtered.
    assert run(path, "-k", BOX, "--normalize", "--alpha", "keep", "--stride", 2, "-o", tmp_path / "s.png").exit_code == 0
    small = np.asarray(Image.open(tmp_path / "s.png"))
    assert small.shape == (8, 8, 4)
    np.testing.assert_array_equal(small[..., 3], rgba[::2, ::2, 3])


def test_alpha_channel_filters_alpha_like_colour(tmp_path, logo):
    path, rgba = logo
    assert run(path, "-k", BOX, "--normalize", "--alpha", "channel", "-o", tmp_path / "c.png").exit_code == 0
    out = np.asarray(Image.open(tmp_path / "c.png"))
    want = to_samples(_box(rgba), np.uint8, "clip")[0]
    assert np.abs(out.astype(int) - want.astype(int)).max() <= 1
    assert out[3, 5, 1] > 0  # the hidden green shows through a plain blur


def test_range_modes_and_the_kernel_default(tmp_path):
    Image.fromarray(np.full((9, 9), 77, np.uint8)).save(tmp_path / "flat.png")
    assert run(tmp_path / "flat.png", "-k", "[[-1,0,1]]", "--range", "offset", "-o", tmp_path / "o.png").exit_code == 0
    assert np.all(np.asarray(Image.open(tmp_path / "o.png")) == 128)
    assert run(tmp_path / "flat.png", "-k", "sobel-x", "-o", tmp_path / "s.png").exit_code == 0  # range_default offset
    assert np.all(np.asarray(Image.open(tmp_path / "s.png")) == 128)
    assert run(tmp_path / "flat.png", "-k", "[[-1,0,1]]", "-o", tmp_path / "c.png").exit_code == 0
    assert np.all(np.asarray(Image.open(tmp_path / "c.png")) == 0)
    result = run(tmp_path / "flat.png", "-k", "[[1]]", "--range", "wrap", "-o", tmp_path / "w.png")
    assert result.exit_code == 2 and "--range" in result.output and not (tmp_path / "w.png").exists()


def test_json_reports_clipped_samples(tmp_path):
    Image.fromarray(np.full((6, 6), 255, np.uint8)).save(tmp_path / "white.png")
    result = run(tmp_path / "white.png", "-k", BOX, "-o", tmp_path / "o.png", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["clipped"] == 36
    assert np.all(np.asarray(Image.open(tmp_path / "o.png")) == 255)  # 2295 clips to 255, never wraps to 247


def test_audio_keeps_format_warns_on_clipping_and_stride_divides_rate(tmp_path):
    rate = 48000
    x = 0.9 * np.sin(np.linspace(0, 300, 4800))
    sf.write(tmp_path / "a.wav", np.stack([x, -x], 1), rate, subtype="PCM_24")
    proc = run_process(tmp_path / "a.wav", "-k", "[1,1,1]", "-o", tmp_path / "loud.wav")
    assert proc.returncode == 0
    assert b"samples clipped" in proc.stderr
    info = sf.info(tmp_path / "loud.wav")
    assert (info.subtype, info.samplerate, info.channels) == ("PCM_24", rate, 2)
    proc = run_process(tmp_path / "a.wav", "-k", "[0.25,0.5,0.25]", "--stride", 3, "-o", tmp_path / "d.wav")
    # A 3-tap smoothing keeps most of what lies above the new Nyquist frequency: said, with the way out.
    assert proc.returncode == 0 and proc.stderr.count(b"\n") == 1 and b"--rate 16000" in proc.stderr
    assert sf.info(tmp_path / "d.wav").samplerate == 16000 and sf.info(tmp_path / "d.wav").frames == 1600


def test_examples_run_for_every_kind(tmp_path):
    for name, kernel, out in [("photo.jpg", "sobel", "edges.png"), ("chirp.wav", "[0.25,0.5,0.25]", "smooth.wav"),
                              ("phantom.npy", "box:3", "smooth.npy")]:
        result = run(os.path.join(EXAMPLES, name), "-k", kernel, "-o", tmp_path / out)
        assert result.exit_code == 0, (name, result.output)
    assert Image.open(tmp_path / "edges.png").size == (451, 300)
    assert np.load(tmp_path / "smooth.npy").shape == (40, 40, 40)


def test_stdin_to_stdout_equals_the_file_path_result(tmp_path):
    photo = os.path.join(EXAMPLES, "photo.jpg")
    assert run_process(photo, "-k", BOX, "--normalize", "-o", tmp_path / "f.png").returncode == 0
    with open(photo, "rb") as fh:
        proc = run_process("-", "-k", BOX, "--normalize", "-o", "-", "--format", "png", stdin=fh)
    assert proc.returncode == 0 and proc.stderr == b""
    assert proc.stdout == (tmp_path / "f.png").read_bytes()
    with open(tmp_path / "f.png", "rb") as fh:  # format from the bytes, output in the input's format
        proc = run_process("-", "-k", "[[1]]", stdin=fh)
    assert proc.returncode == 0 and proc.stdout.startswith(b"\x89PNG")


def test_closed_pipe_exits_quietly(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "n.png")
    proc = subprocess.run(
        f'"{sys.executable}" -m convcli filter "{tmp_path / "n.png"}" -k "[[1]]" -o - | head -c 10 > /dev/null; '
        'exit ${PIPESTATUS[0]}',
        shell=True, executable="/bin/bash", capture_output=True, timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == b""
    assert leftovers(tmp_path) == []


def test_terminal_stdout_without_output_says_what_to_do(tmp_path):
    import pty

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "i.png")
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "convcli", "filter", str(tmp_path / "i.png"), "-k", "[[1]]"],
                              stdout=secondary, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode == 2
    assert b"-o OUTPUT" in proc.stderr and proc.stderr.count(b"\n") == 1
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "convcli", "filter", str(tmp_path / "i.png"), "-k", "[[1]]",
                               "-o", "-"], stdout=secondary, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode == 2 and b"stdout is a terminal" in proc.stderr


def test_output_equal_to_input_is_refused(tmp_path):
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).save(tmp_path / "i.png")
    before = (tmp_path / "i.png").read_bytes()
    os.symlink(tmp_path / "i.png", tmp_path / "link.png")
    for target in (tmp_path / "i.png", tmp_path / "link.png", f"{tmp_path}/./i.png"):
        result = run(tmp_path / "i.png", "-k", BOX, "-o", target)
        assert result.exit_code == 1 and "--in-place" in result.output
    assert (tmp_path / "i.png").read_bytes() == before
    assert run(tmp_path / "i.png", "-k", "[[2]]", "--in-place").exit_code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "i.png")), np.arange(16).reshape(4, 4) * 2)
    assert leftovers(tmp_path) == []


def _corrupt_cases(tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 9).save(tmp_path / "ok.png")
    raw = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(raw[: len(raw) - 40])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "mislabelled.wav").write_bytes(raw)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).convert("LAB").save(tmp_path / "lab.tif")
    return {"truncated.png": "truncated", "empty.png": "empty file", "mislabelled.wav": "name says WAV",
            "lab.tif": "unsupported image mode"}


def test_corrupt_inputs_one_line_exit_1_no_file(tmp_path):
    for name, words in _corrupt_cases(tmp_path).items():
        out = tmp_path / f"out-{name}.png"
        proc = run_process(tmp_path / name, "-k", BOX, "-o", out)
        lines = proc.stderr.decode().splitlines()
        assert proc.returncode == 1, (name, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"convcli: error: {tmp_path / name}: "), lines
        assert words in lines[0] and "Traceback" not in lines[0]
        assert not out.exists()
    assert leftovers(tmp_path) == []


def test_limits_from_the_command_line(tmp_path):
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(tmp_path / "i.png")
    result = run(tmp_path / "i.png", "-k", "[[1]]", "--max-pixels", 100, "-o", tmp_path / "o.png")
    assert result.exit_code == 1 and "--max-pixels" in result.output and not (tmp_path / "o.png").exists()
    np.save(tmp_path / "v.npy", np.zeros((64, 64, 64), np.float32))
    result = run(tmp_path / "v.npy", "-k", "[[[1]]]", "--memory-budget", "1M", "-o", tmp_path / "o.npy")
    assert result.exit_code == 1 and "memory budget" in result.output
    result = run(tmp_path / "v.npy", "-k", "[[[1]]]", "--memory-budget", "lots", "-o", tmp_path / "o.npy")
    assert result.exit_code == 2 and "--memory-budget" in result.output


def test_kind_key_and_orientation_flags(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros(8, np.float32), b=np.ones((6, 2), np.float32))
    result = run(tmp_path / "two.npz", "-k", "[1,1]", "-o", tmp_path / "o.npy")
    assert result.exit_code == 1 and "--key" in result.output
    assert run(tmp_path / "two.npz", "--key", "b", "--kind", "audio", "-k", "[1,1]", "-o", tmp_path / "o.npy").exit_code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), np.full((6, 2), 2.0))
    assert run(tmp_path / "two.npz", "--kind", "sound", "-k", "[1]", "-o", tmp_path / "x.npy").exit_code == 2
    stored = np.zeros((10, 20, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert run(tmp_path / "r.jpg", "-k", "[[1]]", "-o", tmp_path / "u.png").exit_code == 0
    assert Image.open(tmp_path / "u.png").size == (10, 20)
    assert run(tmp_path / "r.jpg", "-k", "[[1]]", "--no-auto-orient", "-o", tmp_path / "s.png").exit_code == 0
    assert Image.open(tmp_path / "s.png").size == (20, 10)


def test_every_gif_frame_is_filtered_and_written(tmp_path):
    frames = [Image.fromarray(np.full((6, 6, 3), v, np.uint8)) for v in (10, 200, 90)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    proc = run_process(tmp_path / "a.gif", "-k", "[[1]]", "-o", tmp_path / "o.gif")
    assert proc.returncode == 0 and proc.stderr == b""
    with Image.open(tmp_path / "o.gif") as out:
        assert out.n_frames == 3


def test_nifti_stride_through_the_cli(tmp_path):
    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    nib.save(nib.Nifti1Image(np.ones((9, 9, 5), np.float32), affine), tmp_path / "v.nii.gz")
    result = run(tmp_path / "v.nii.gz", "-k", "box:3", "--stride", "2,2,1", "-o", tmp_path / "s.nii.gz")
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / "s.nii.gz")
    assert out.shape == (5, 5, 5)
    assert out.header.get_zooms()[:3] == pytest.approx((1.6, 1.6, 1.5))
    np.testing.assert_allclose(out.affine[:3, 3], 0.0, atol=1e-6)  # output voxel 0 sits on input voxel 0


def test_compress_level_trades_size_not_pixels(tmp_path):
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:96, 0:128]
    Image.fromarray(((x * 2 + y) % 256).astype(np.uint8)).save(tmp_path / "in.png")
    sizes, pixels = {}, {}
    for level in (0, 1, 9):
        out = tmp_path / f"out{level}.png"
        proc = subprocess.run([sys.executable, "-m", "convcli", "filter", str(tmp_path / "in.png"), "-k", "box:3",
                               "-o", str(out), "--compress-level", str(level)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        sizes[level], pixels[level] = out.stat().st_size, np.asarray(Image.open(out))
    assert sizes[0] > sizes[1] >= sizes[9]
    assert (pixels[0] == pixels[1]).all() and (pixels[1] == pixels[9]).all()
    proc = subprocess.run([sys.executable, "-m", "convcli", "filter", str(tmp_path / "in.png"), "-k", "box:3",
                           "-o", str(tmp_path / "bad.png"), "--compress-level", "12"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--compress-level" in proc.stderr and not (tmp_path / "bad.png").exists()
