"""A JPEG photo filtered band by band (decoding, filtering and encoding overlapping) gives the whole-image result.

The photos here are small; the size from which the band path is taken is
lowered so that they are cut into many bands (128 output rows each, the
encoder's stripe).  Every comparison is against the same command run with
the band path switched off: PNG outputs must hold the same samples, JPEG
outputs must decode to the same pixels and carry the same metadata.  A JPEG
written in stripes has restart markers (DRI); one written whole has none,
which tells the two paths apart.
"""
from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from conftest import EXAMPLES, convcli, convcli_process, leftovers, session_members
from convcli.io import jpeg_stream
from convcli.pipeline import banded

HEIGHT, WIDTH = 700, 530  # 6 bands of 128 rows, the last one short


def photo(width: int, height: int, *, seed: int = 0, grey: bool = False) -> np.ndarray:
    """A photo-like picture: the example photo enlarged, with sensor noise (seeded)."""
    rng = np.random.default_rng(seed)
    base = Image.open(EXAMPLES / "photo.jpg").convert("RGB").resize((width, height), Image.BICUBIC)
    pixels = np.asarray(base).astype(np.float64) + rng.normal(0, 6, (height, width, 1)) + rng.normal(0, 3, (height, width, 3))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    return pixels.mean(axis=2).astype(np.uint8) if grey else pixels


def save_jpeg(path, pixels, **options) -> str:
    Image.fromarray(pixels).save(path, format="JPEG", **options)
    return str(path)


def camera_exif(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    icc = Image.open(EXAMPLES / "rocket.jpg").info["icc_profile"]
    return {
        "rgb": save_jpeg(folder / "rgb.jpg", photo(WIDTH, HEIGHT), quality=92, exif=camera_exif(), dpi=(300, 300),
                         icc_profile=icc, comment=b"a test photo"),
        "grey": save_jpeg(folder / "grey.jpg", photo(WIDTH, HEIGHT, seed=1, grey=True), quality=90),
        "444": save_jpeg(folder / "444.jpg", photo(WIDTH, 300, seed=2), quality=95, subsampling=0),
    }


@pytest.fixture
def bands(monkeypatch):
    """The band path for any size of photo, one 128-row stripe per band."""
    monkeypatch.setattr(banded, "MIN_PIXELS", 0)
    monkeypatch.setattr(banded, "BAND_BYTES", 1)


def run_both(monkeypatch, tmp_path, src: str, suffix: str, *args) -> tuple:
    """Run ``convcli filter src ARGS`` by bands and whole; return both outputs' paths and both runs."""
    outputs, runs = [], []
    for name, minimum in (("bands", 0), ("whole", 1 << 62)):
        monkeypatch.setattr(banded, "MIN_PIXELS", minimum)
        out = tmp_path / f"{name}{suffix}"
        runs.append(convcli("filter", src, "-o", out, *args))
        assert runs[-1].exit_code == 0, runs[-1].stderr
        outputs.append(out)
    return outputs, runs


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def has_restarts(path) -> bool:
    """Whether a JPEG's headers define a restart interval (a DRI segment before the scan)."""
    data = open(path, "rb").read()
    return b"\xff\xdd" in data[:data.index(b"\xff\xda")]


def idat_count(path) -> int:
    data, count, at = open(path, "rb").read(), 0, 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        count += kind == b"IDAT"
        at += 12 + length
    return count


CHAINS = [
    ("-k", "gaussian:sigma=2"),
    ("-k", "sobel"),  # two responses combined into a magnitude
    ("-k", "sharpen"),
    ("-k", "box:5"),
    ("-k", "box:31"),  # a halo as tall as a quarter band
    ("-k", "gaussian:sigma=1", "-k", "sharpen"),  # a chain: two halos
    ("-k", "sobel-x"),  # signed: offset by default
    ("-k", "[[0,1,0],[1,-4,1],[0,1,0]]", "--range", "abs"),
    ("-k", "box:3", "--dilation", "2", "--pad-mode", "zeros"),
    ("-k", "gaussian:sigma=1.5", "--padding", "valid"),  # fewer output rows than input rows
    ("-k", "emboss", "--padding", "full"),  # more
    ("-k", "[[1,2],[3,4]]", "--normalize", "--pad-mode", "replicate"),  # even: the extra sample after
    ("-k", "gaussian:sigma=2", "--convolve", "--pad-mode", "symmetric"),
    ("-k", "[[1,0,0,0,0],[0,0,0,0,0],[0,0,0,0,0],[0,0,0,0,0],[0,0,0,0,-1]]", "--method", "direct"),
]


@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: " ".join(c[1::2]))
def test_a_png_written_by_bands_holds_the_whole_image_samples(photos, tmp_path, monkeypatch, bands, chain):
    (by_bands, whole), runs = run_both(monkeypatch, tmp_path, photos["rgb"], ".png", *chain)
    assert np.array_equal(pixels(by_bands), pixels(whole))
    assert Image.open(by_bands).info == Image.open(whole).info  # dpi, EXIF and ICC profile alike
    assert idat_count(by_bands) >= 5 and idat_count(whole) == 1  # the band path wrote it, a stripe per chunk
    assert runs[0].stderr == runs[1].stderr


@pytest.mark.parametrize("chain", CHAINS[:4] + CHAINS[6:7], ids=lambda c: " ".join(c[1::2]))
@pytest.mark.parametrize("kind", ["rgb", "grey", "444"])
def test_a_jpeg_written_in_stripes_decodes_to_the_whole_image_pixels(photos, tmp_path, monkeypatch, bands, chain,
                                                                      kind):
    (by_bands, whole), _ = run_both(monkeypatch, tmp_path, photos[kind], ".jpg", *chain)
    assert has_restarts(by_bands) and not has_restarts(whole)
    assert np.array_equal(pixels(by_bands), pixels(whole))
    for reader in (Image.open, lambda p: Image.open(io.BytesIO(open(p, "rb").read()))):
        a, b = reader(by_bands), reader(whole)
        assert (a.size, a.mode, a.quantization, a.info.get("exif"), a.info.get("icc_profile"), a.info.get("dpi"),
                a.info.get("comment")) == (b.size, b.mode, b.quantization, b.info.get("exif"),
                                           b.info.get("icc_profile"), b.info.get("dpi"), b.info.get("comment"))


def test_a_jpeg_in_stripes_reads_alike_in_opencv_and_ffmpeg_semantics(photos, tmp_path, monkeypatch, bands):
    """Other decoders (libjpeg-turbo in OpenCV) read the joined stream as one image, restart markers and all."""
    import cv2

    (by_bands, whole), _ = run_both(monkeypatch, tmp_path, photos["rgb"], ".jpg", "-k", "sharpen", "--quality", "80")
    ours = cv2.imdecode(np.fromfile(by_bands, dtype=np.uint8), cv2.IMREAD_COLOR)
    theirs = cv2.imdecode(np.fromfile(whole, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert ours.shape == (HEIGHT, WIDTH, 3) and np.array_equal(ours, theirs)


@settings(max_examples=20)
@given(height=st.integers(1, 420), width=st.integers(1, 90), taps=st.tuples(st.integers(1, 9), st.integers(1, 5)),
       dilation=st.integers(1, 3), pad_mode=st.sampled_from(["reflect", "symmetric", "replicate", "zeros"]),
       seed=st.integers(0, 2 ** 16))
def test_any_kernel_any_height_by_bands_is_the_whole_result(tmp_path_factory, height, width, taps, dilation, pad_mode,
                                                            seed):
    """Random weights, sizes and borders: the band path's samples are the whole-image path's, bit for bit."""
    folder = tmp_path_factory.mktemp("random")
    rng = np.random.default_rng(seed)
    src = save_jpeg(folder / "in.jpg", rng.integers(0, 256, (height, width, 3), dtype=np.uint8), quality=90)
    kernel = np.round(rng.normal(size=taps), 3).tolist()
    args = ("-k", str(kernel), "--dilation", str(dilation), "--pad-mode", pad_mode, "--range", "offset")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(banded, "BAND_BYTES", 1)
        (by_bands, whole), _ = run_both(monkeypatch, folder, src, ".png", *args)
    assert np.array_equal(pixels(by_bands), pixels(whole))


@pytest.mark.parametrize("args, why", [
    (("--stride", "2"), "a stride"),
    (("--pad-mode", "circular"), "a border that wraps"),
    (("--range", "rescale"), "a range from the whole result"),
    (("--colorspace", "linear"), "a colour space"),
    (("--depth", "16", "--format", "png"), "16-bit samples"),
])
def test_what_needs_the_whole_image_takes_the_whole_image_path(photos, tmp_path, monkeypatch, bands, args, why):
    out = tmp_path / "out.jpg"
    assert convcli("filter", photos["rgb"], "-k", "gaussian:sigma=1", *args, "-o", out).exit_code == 0, why
    if out.suffix == ".jpg" and "--format" not in args:
        assert not has_restarts(out), why


def test_a_rotated_photo_is_filtered_upright_by_the_whole_image_path(tmp_path, bands):
    src = save_jpeg(tmp_path / "portrait.jpg", photo(WIDTH, HEIGHT), quality=90, exif=camera_exif(orientation=6))
    out = tmp_path / "out.jpg"
    run = convcli("filter", src, "-k", "sharpen", "-o", out)
    assert run.exit_code == 0 and "orientation 6 applied" in run.stderr
    assert Image.open(out).size == (HEIGHT, WIDTH) and not has_restarts(out)


def test_a_progressive_photo_stays_progressive(photos, tmp_path, bands):
    src = save_jpeg(tmp_path / "progressive.jpg", photo(WIDTH, HEIGHT), quality=90, progressive=True)
    out = tmp_path / "out.jpg"
    assert convcli("filter", src, "-k", "sharpen", "-o", out).exit_code == 0
    assert Image.open(out).info.get("progressive") and not has_restarts(out)


def test_notes_clipping_and_json_are_the_whole_image_paths(photos, tmp_path, monkeypatch, bands):
    args = ("-k", "sobel", "--range", "clip", "--compress-level", "5", "--json")
    (by_bands, whole), runs = run_both(monkeypatch, tmp_path, photos["rgb"], ".jpg", *args)
    import json

    reports = [json.loads(r.stdout) for r in runs]
    for report in reports:
        report.pop("seconds"), report.pop("output")
    assert reports[0] == reports[1] and reports[0]["clipped"] > 0
    assert "--compress-level does not apply to JPEG" in runs[0].stderr and runs[0].stderr == runs[1].stderr


def test_stdin_to_stdout_by_bands(photos, tmp_path, monkeypatch, bands):
    data = open(photos["rgb"], "rb").read()
    (_, whole), _ = run_both(monkeypatch, tmp_path, photos["rgb"], ".png", "-k", "sharpen")
    monkeypatch.setattr(banded, "MIN_PIXELS", 0)
    run = convcli("filter", "-", "-k", "sharpen", "--format", "png", "-o", "-", input=data)
    assert run.exit_code == 0, run.stderr
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(run.stdout_bytes))), pixels(whole))


def test_a_truncated_photo_fails_as_on_the_whole_image_path_and_leaves_nothing(photos, tmp_path, monkeypatch, bands):
    data = open(photos["rgb"], "rb").read()
    src = tmp_path / "cut.jpg"
    src.write_bytes(data[:len(data) * 3 // 5])
    stderr = []
    for minimum in (0, 1 << 62):
        monkeypatch.setattr(banded, "MIN_PIXELS", minimum)
        run = convcli("filter", src, "-k", "gaussian:sigma=2", "-o", tmp_path / "out.jpg")
        assert run.exit_code == 1 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
        stderr.append(run.stderr)
    assert stderr[0] == stderr[1] and "truncated" in stderr[0]
    assert not (tmp_path / "out.jpg").exists() and leftovers(tmp_path) == []


def test_damaged_data_gives_what_the_whole_image_path_gives(photos, tmp_path, monkeypatch, bands):
    """libjpeg recovers from some damage with a warning: both paths then give the same pixels, or fail alike."""
    data = bytearray(open(photos["rgb"], "rb").read())
    scan = data.index(b"\xff\xda")
    for at in range(scan + 5000, len(data) - 100, 7919):
        data[at] ^= 0x5A
    src = tmp_path / "damaged.jpg"
    src.write_bytes(bytes(data))
    results = []
    for name, minimum in (("bands", 0), ("whole", 1 << 62)):
        monkeypatch.setattr(banded, "MIN_PIXELS", minimum)
        out = tmp_path / f"{name}.png"
        run = convcli("filter", src, "-k", "box:3", "-o", out)
        results.append((run.exit_code, run.stderr, pixels(out).tobytes() if run.exit_code == 0 else None))
    assert results[0] == results[1]


# A photo over the default band threshold, for the runs in other processes (nothing to monkeypatch there).
BIG = (2200, 2000)


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    return save_jpeg(folder / "big.jpg", photo(*BIG, seed=3), quality=90, exif=camera_exif())


def peak_rss_mib(*args) -> float:
    """The peak resident memory of ``convcli ARGS`` run in a process of its own (Linux's VmHWM at its end).

    Not getrusage: Linux carries a forked child's peak across exec, so it
    would report this test process's own.
    """
    code = ("import sys; from convcli.cli import main; code = main(sys.argv[1:]); "
            "sys.stderr.write(open('/proc/self/status').read()); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's /proc")
def test_the_memory_held_is_bands_not_the_image(big_photo, tmp_path):
    """The whole-image path holds the float result (4.4 MP x 3 x 4 bytes = 53 MB) and more; the bands do not."""
    by_bands = peak_rss_mib("filter", big_photo, "-k", "gaussian:sigma=2", "-o", tmp_path / "a.jpg")
    whole = peak_rss_mib("filter", big_photo, "-k", "gaussian:sigma=2", "--range", "rescale",
                         "-o", tmp_path / "b.jpg")  # a range from the whole result: the whole-image path
    float_result = BIG[0] * BIG[1] * 3 * 4 / 2 ** 20
    assert whole - by_bands > float_result, (by_bands, whole)


def test_a_piped_photo_and_a_batch_in_worker_processes(big_photo, tmp_path, monkeypatch):
    monkeypatch.setattr(banded, "MIN_PIXELS", 1 << 62)
    whole = tmp_path / "whole.png"
    assert convcli("filter", big_photo, "-k", "sharpen", "-o", whole).exit_code == 0
    piped = convcli_process("filter", "-", "-k", "sharpen", "--format", "png", "-o", "-",
                            input=open(big_photo, "rb").read())
    assert piped.returncode == 0, piped.stderr
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(piped.stdout))), pixels(whole))
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        os.link(big_photo, folder / f"p{i}.jpg")
    done = convcli_process("filter", folder, "-o", tmp_path / "out", "-k", "sharpen", "-j", "2", "--format", "png")
    assert done.returncode == 0, done.stderr
    for i in range(2):
        assert np.array_equal(pixels(tmp_path / "out" / f"p{i}.png"), pixels(whole))


# --------------------------------------------------------------------------- the decoder and encoder processes
def counting_forks(monkeypatch) -> list:
    """Count the processes forked from here on (each fork's child is one entry)."""
    forks, real = [], os.fork

    def fork():
        pid = real()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return forks


@pytest.mark.parametrize("chain", CHAINS[:3] + CHAINS[5:6], ids=lambda c: " ".join(c[1::2]))
@pytest.mark.parametrize("kind,suffix", [("rgb", ".jpg"), ("grey", ".jpg"), ("444", ".jpg"), ("rgb", ".png")])
def test_decoding_and_encoding_in_processes_writes_the_bytes_threads_write(photos, tmp_path, monkeypatch, bands,
                                                                          chain, kind, suffix):
    written = []
    for forked in (True, False):
        monkeypatch.setattr(jpeg_stream, "FORKED", forked)
        forks = counting_forks(monkeypatch)
        out = tmp_path / f"{forked}{suffix}"
        run = convcli("filter", photos[kind], "-o", out, *chain)
        assert run.exit_code == 0, run.stderr
        # the decoder, and for a JPEG the encoder, each in a process of its own; none with threads
        assert len(forks) == (forked * (2 if suffix == ".jpg" else 1))
        written.append(out.read_bytes())
    assert written[0] == written[1]


def dying_on_call(number: int, work):
    """`work` that kills its own process (as the out-of-memory killer would) on its `number`-th call there."""
    calls = []

    def run(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            os.kill(os.getpid(), signal.SIGKILL)
        return work(*args, **kwargs)
    return run


def test_an_encoder_process_that_dies_fails_in_one_line_and_leaves_nothing(photos, tmp_path, monkeypatch, bands):
    monkeypatch.setattr(jpeg_stream, "_encode_stripe", dying_on_call(3, jpeg_stream._encode_stripe))
    out = tmp_path / "out.jpg"
    run = convcli("filter", photos["rgb"], "-k", "sharpen", "-o", out)
    assert run.exit_code == 1 and "Traceback" not in run.stderr
    assert run.stderr == (f"convcli: error: {out}: cannot write this image as JPEG: "
                          "the encoder process was killed by SIGKILL\n")
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_decoder_process_that_dies_fails_in_one_line_and_leaves_nothing(photos, tmp_path, monkeypatch, bands):
    monkeypatch.setattr(jpeg_stream.ForkedJpegRows, "_publish",
                        dying_on_call(1, jpeg_stream.ForkedJpegRows._publish))
    out = tmp_path / "out.jpg"
    run = convcli("filter", photos["rgb"], "-k", "sharpen", "-o", out)
    assert run.exit_code == 1 and "Traceback" not in run.stderr
    assert run.stderr == f"convcli: error: {photos['rgb']}: the JPEG decoder process was killed by SIGKILL\n"
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads Linux's /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_photo_leaves_no_output_and_no_process(big_photo, tmp_path, signum):
    out = tmp_path / "out.jpg"
    slow = [arg for _ in range(8) for arg in ("-k", "gaussian:sigma=6")]  # time to stop it mid-photo
    proc = subprocess.Popen([sys.executable, "-m", "convcli", "filter", big_photo, *slow, "-o", out],
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(session_members(proc.pid)) < 3:  # decoding and encoding
        time.sleep(0.002)
    assert len(session_members(proc.pid)) == 3, "the run ended before its decoder and encoder were seen"
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C reaches the whole process group
    else:
        os.kill(proc.pid, signum)  # `kill PID` reaches the parent only
    code = proc.wait(timeout=30)
    stderr = proc.stderr.read().decode()
    assert code in (-signum, 128 + signum), stderr
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 5
    while session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert session_members(proc.pid) == []
    assert not out.exists() and leftovers(tmp_path) == []


@settings(max_examples=60)
@given(seed=st.integers(0, 2 ** 32 - 1), low=st.floats(-3, 1), high=st.floats(250, 260),
       halves=st.booleans(), bad=st.sampled_from([None, np.nan, np.inf, -np.inf]))
def test_the_plain_8_bit_conversion_is_to_samples(seed, low, high, halves, bad):
    """clip_to_uint8 (min, max, OpenCV's rounding) gives to_samples' samples and clipped count, and refuses alike."""
    import cv2  # noqa: F401  (the fast path is taken once OpenCV is loaded)

    from convcli.errors import DataError
    from convcli.io.samples import clip_to_uint8, to_samples

    rng = np.random.default_rng(seed)
    values = rng.uniform(low, high, (19, 23, 3)).astype(np.float32)
    if halves:  # ties, where half to even and half away from zero differ
        values = (np.floor(values) + np.float32(0.5)).astype(np.float32)
    if bad is not None:
        values[rng.integers(19), rng.integers(23), rng.integers(3)] = bad
    out = np.empty(values.shape, np.uint8)
    try:
        expected, clipped = to_samples(values, np.uint8, "clip")
    except DataError as exc:
        with pytest.raises(DataError) as fast:
            clip_to_uint8(values, out)
        assert str(fast.value) == str(exc)
        return
    assert clip_to_uint8(values, out) == clipped
    assert np.array_equal(out, expected)
