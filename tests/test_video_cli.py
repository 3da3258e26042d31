"""Videos through `convcli filter` as users run it: samples, timing, metadata and other streams kept, damage reported.

Clips are made here with PyAV (lossless FFV1, or x264 at quantiser 0) and read
back with PyAV alone; the oracle is the engine's ``correlate`` on the decoded
frames, frame by frame or on the whole (t, y, x) volume.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import convcli, convcli_process, leftovers
from video_clips import agree, make_clip, oracle, packet_digests, read_planes, stream_facts, volume

from convcli.engine import correlate
from convcli.io.samples import to_samples
from convcli.kernels import resolve


def _ok(run):
    assert run.exit_code == 0, run.stderr
    return run


# --------------------------------------------------------------------------- samples
@pytest.mark.parametrize("spec", ["gaussian:sigma=1.5", "box:3", "sharpen"])
def test_a_2d_kernel_filters_every_plane_of_every_frame_exactly_as_correlate(tmp_path, spec):
    src = tmp_path / "clip.mkv"
    pictures = make_clip(src)
    _ok(convcli("filter", src, "-k", spec, "-o", tmp_path / "out.mkv"))
    weights = resolve(spec, ndim=2).weights[0]
    out = read_planes(tmp_path / "out.mkv")
    assert len(out) == len(pictures)
    for before, after in zip(pictures, out):
        for plane, filtered in zip(before, after):  # Y at 64x48, U and V at 32x24
            np.testing.assert_array_equal(filtered, to_samples(correlate(plane, weights), np.uint8)[0])


def test_a_lossless_h264_clip_stays_exact_with_crf_0(tmp_path):
    src = tmp_path / "clip.mp4"
    pictures = make_clip(src, codec="libx264", options={"qp": "0"})
    _ok(convcli("filter", src, "-k", "gaussian:sigma=1", "--crf", "0", "-o", tmp_path / "out.mp4"))
    weights = resolve("gaussian:sigma=1", ndim=2).weights[0]
    for before, after in zip(pictures, read_planes(tmp_path / "out.mp4")):
        for plane, filtered in zip(before, after):
            np.testing.assert_array_equal(filtered, to_samples(correlate(plane, weights), np.uint8)[0])


def test_chroma_is_filtered_as_a_difference_from_neutral_grey(tmp_path):
    """sobel-x on U and V: no colour where the colour does not change; luma shown around mid-grey (offset)."""
    src = tmp_path / "clip.mkv"
    pictures = make_clip(src)
    _ok(convcli("filter", src, "-k", "sobel-x", "-o", tmp_path / "out.mkv"))
    weights = resolve("sobel-x", ndim=2).weights[0][None]
    out = read_planes(tmp_path / "out.mkv")
    for k in range(3):
        expected, values = oracle(volume(pictures, k), weights, chroma=k > 0, mode="offset")
        agree(volume(out, k), expected, values)
    flat = tmp_path / "flat.mkv"
    make_clip(flat, smooth=True)
    _ok(convcli("filter", flat, "-k", "sobel-x", "--range", "abs", "-o", tmp_path / "flat_out.mkv"))
    for k in (1, 2):  # U and V ramps along x: sobel-x is a constant difference from neutral there
        assert abs(float(np.median(volume(read_planes(tmp_path / "flat_out.mkv"), k))) - 128) < 64


@pytest.mark.parametrize("spec, stride", [("box:3,1,1", "1"), ("gaussian:sigma=1,1.5,1.5", "1"),
                                          ("sobel-z", "1"), ("box:3,3,3", "2,1,1"), ("gaussian:sigma=2,1,1", "3,1,1")])
def test_a_3d_kernel_runs_over_time_as_correlate_on_the_decoded_volume(tmp_path, spec, stride):
    src = tmp_path / "clip.mkv"
    pictures = make_clip(src, frames=20)
    _ok(convcli("filter", src, "-k", spec, "--stride", stride, "--range", "clip", "-o", tmp_path / "out.mkv"))
    weights = resolve(spec, ndim=3).weights[0]
    strides = tuple(int(s) for s in stride.split(","))
    out = read_planes(tmp_path / "out.mkv")
    assert len(out) == -(-20 // strides[0])
    for k in range(3):
        expected, values = oracle(volume(pictures, k), weights, chroma=k > 0, stride=strides)
        agree(volume(out, k), expected, values)


def test_axes_t_y_x_and_a_3d_kernel_file_reach_across_frames(tmp_path):
    src = tmp_path / "clip.mkv"
    pictures = make_clip(src, frames=10)
    _ok(convcli("filter", src, "-k", "gaussian:sigma=1", "--axes", "t,y,x", "-o", tmp_path / "iso.mkv"))
    weights = resolve("gaussian:sigma=1", ndim=3).weights[0]
    assert weights.shape == (9, 9, 9)
    for k in range(3):
        agree(volume(read_planes(tmp_path / "iso.mkv"), k), *oracle(volume(pictures, k), weights, chroma=k > 0))
    random = np.random.default_rng(3).standard_normal((3, 3, 3)) / 9
    np.save(tmp_path / "k.npy", random)
    _ok(convcli("filter", src, "-k", tmp_path / "k.npy", "--range", "clip", "-o", tmp_path / "file.mkv"))
    for k in range(3):
        agree(volume(read_planes(tmp_path / "file.mkv"), k), *oracle(volume(pictures, k), random, chroma=k > 0))
    _ok(convcli("filter", src, "-k", "gaussian:sigma=1", "--axes", "y,x", "-o", tmp_path / "flat.mkv"))
    flat = resolve("gaussian:sigma=1", ndim=2).weights[0][None]
    agree(volume(read_planes(tmp_path / "flat.mkv"), 0), *oracle(volume(pictures, 0), flat))


@pytest.mark.parametrize("padding, pad_mode", [("valid", "reflect"), ("full", "zeros"), ("2", "symmetric"),
                                               ("same", "circular"), ("same", "constant:20"), ("same", "replicate")])
def test_padding_and_border_modes_act_in_time_as_in_space(tmp_path, padding, pad_mode):
    src = tmp_path / "clip.mkv"
    pictures = make_clip(src, pix_fmt="yuv444p", frames=12)
    _ok(convcli("filter", src, "-k", "box:3,3,3", "--padding", padding, "--pad-mode", pad_mode,
                "-o", tmp_path / "out.mkv"))
    weights = resolve("box:3,3,3", ndim=3).weights[0]
    out = read_planes(tmp_path / "out.mkv")
    pad = int(padding) if padding.isdigit() else padding
    for k in range(3):
        expected, values = oracle(volume(pictures, k), weights, chroma=k > 0, padding=pad, pad_mode=pad_mode)
        agree(volume(out, k), expected, values)


def test_spatial_stride_scales_the_picture_and_its_chroma_with_it(tmp_path):
    src = tmp_path / "clip.mkv"
    make_clip(src)
    _ok(convcli("filter", src, "-k", "box:2", "--stride", "2", "-o", tmp_path / "out.mkv"))
    facts = stream_facts(tmp_path / "out.mkv")
    assert facts["size"] == (32, 24) and facts["pix_fmt"] == "yuv420p" and facts["frames"] == 24
    assert [p.shape for p in read_planes(tmp_path / "out.mkv")[0]] == [(24, 32), (12, 16), (12, 16)]


def test_luma_only_leaves_chroma_exactly_as_it_was(tmp_path):
    src = tmp_path / "clip.mkv"
    pictures = make_clip(src)
    _ok(convcli("filter", src, "-k", "sobel", "--colorspace", "luma", "-o", tmp_path / "out.mkv"))
    out = read_planes(tmp_path / "out.mkv")
    for k in (1, 2):
        np.testing.assert_array_equal(volume(out, k), volume(pictures, k))
    assert not np.array_equal(volume(out, 0), volume(pictures, 0))


def test_rgb_converts_and_comes_back(tmp_path):
    """An identity kernel through RGB returns the picture within the conversion's rounding."""
    src = tmp_path / "clip.mkv"
    pictures = make_clip(src, pix_fmt="yuv444p", smooth=True)
    _ok(convcli("filter", src, "-k", "identity", "--colorspace", "rgb", "-o", tmp_path / "out.mkv"))
    out = read_planes(tmp_path / "out.mkv")
    assert stream_facts(tmp_path / "out.mkv")["pix_fmt"] == "yuv444p"
    for k in range(3):
        assert np.abs(volume(out, k).astype(int) - volume(pictures, k)).max() <= 3


def test_ten_bit_samples_stay_ten_bit(tmp_path):
    src = tmp_path / "clip.mkv"
    pictures = make_clip(src, pix_fmt="yuv420p10le", frames=8)
    _ok(convcli("filter", src, "-k", "box:3", "-o", tmp_path / "out.mkv"))
    assert stream_facts(tmp_path / "out.mkv")["pix_fmt"] == "yuv420p10le"
    weights = resolve("box:3", ndim=2).weights[0][None]
    out = read_planes(tmp_path / "out.mkv")
    for k in range(3):
        expected, values = oracle(volume(pictures, k), weights, chroma=k > 0, bits=10)
        agree(volume(out, k), expected, values)
    assert volume(out, 0).max() > 255


# --------------------------------------------------------------------------- what is kept
def test_container_codec_format_rate_time_base_colour_rotation_and_audio_are_kept(tmp_path):
    src = tmp_path / "clip.mp4"
    make_clip(src, codec="libx264", options={"qp": "0"}, audio=True, rotation=90)
    _ok(convcli("filter", src, "-k", "box:3", "-o", tmp_path / "out.mp4"))
    before, after = stream_facts(src), stream_facts(tmp_path / "out.mp4")
    for key in ("codec", "pix_fmt", "size", "rate", "time_base", "frames", "pts", "rotation", "colour", "streams"):
        assert after[key] == before[key], key
    assert before["rotation"] == 90 and before["colour"]["colorspace"] == 1
    assert packet_digests(tmp_path / "out.mp4") == packet_digests(src)  # the audio, packet for packet


def test_subtitles_are_copied_packet_for_packet_or_left_out_with_a_warning(tmp_path):
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=12, subtitles=True, audio=True)
    _ok(convcli("filter", src, "-k", "box:3,1,1", "-o", tmp_path / "out.mkv"))
    streams = stream_facts(src)["streams"]
    assert streams == ["video", "audio", "subtitle"] and stream_facts(tmp_path / "out.mkv")["streams"] == streams
    for kind in ("subtitle", "audio"):
        assert packet_digests(tmp_path / "out.mkv", kind) == packet_digests(src, kind)
    run = _ok(convcli("filter", src, "-k", "box:3", "-o", tmp_path / "out.mp4"))  # MP4 holds no SubRip
    assert "stream #2 (subtitle, srt) cannot be stored in mp4 and was left out" in run.stderr
    assert stream_facts(tmp_path / "out.mp4")["streams"] == ["video", "audio"]


def test_a_variable_frame_rate_keeps_every_timestamp(tmp_path):
    times = [0, 40, 80, 150, 170, 260, 300, 310, 400, 480, 500, 620]
    src = tmp_path / "vfr.mkv"
    make_clip(src, frames=len(times), pts=times)
    _ok(convcli("filter", src, "-k", "gaussian:sigma=1,1,1", "-o", tmp_path / "out.mkv"))
    assert stream_facts(tmp_path / "out.mkv")["pts"] == times
    _ok(convcli("filter", src, "-k", "box:3,1,1", "--stride", "2,1,1", "--padding", "valid",
                "-o", tmp_path / "half.mkv"))
    assert stream_facts(tmp_path / "half.mkv")["pts"] == times[1:-1:2]


def test_a_temporal_stride_halves_the_frame_rate(tmp_path):
    src = tmp_path / "clip.mp4"
    make_clip(src, codec="libx264", options={"qp": "0"}, rate=30, audio=True)
    _ok(convcli("filter", src, "-k", "box:1", "--stride", "2,1,1", "-o", tmp_path / "out.mp4"))
    facts = stream_facts(tmp_path / "out.mp4")
    assert facts["rate"] == 15 and facts["frames"] == 12 and facts["pts"] == stream_facts(src)["pts"][::2]
    assert packet_digests(tmp_path / "out.mp4") == packet_digests(src)


def test_a_time_in_milliseconds_counts_frames_at_the_clip_rate(tmp_path):
    src = tmp_path / "clip.mkv"
    make_clip(src, rate=25, frames=6)
    explained = _ok(convcli("filter", src, "-k", "gaussian:sigma=40ms,0,0", "--explain", "--json"))
    assert '"shape": [9, 1, 1]' in explained.stdout  # 40 ms at 25 fps: sigma 1 frame, radius 4
    run = convcli("filter", src, "-k", "gaussian:sigma=40ms", "-o", tmp_path / "out.mkv")
    assert run.exit_code == 2 and "only the first axis" in run.stderr


def test_explain_names_the_time_axis_its_padding_and_the_frames_a_stride_keeps(tmp_path):
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=10)
    text = _ok(convcli("filter", src, "-k", "box:3,3,3", "-k", "sobel", "--stride", "2,1,1", "--explain")).stdout
    assert "axes: t, y, x" in text and "padding axis t: 1 before, 1 after" in text
    assert "output shape: (5, 48, 64)" in text and "over time, 3 taps" in text
    steps = json.loads(_ok(convcli("filter", src, "-k", "box:3,1,1", "--stride", "2,1,1", "--explain", "--json")).stdout)
    assert steps[0]["axes"] == ["t", "y", "x"] and steps[0]["stride"] == [2, 1, 1]
    assert steps[0]["output_shape"] == [5, 48, 64]


def test_a_clip_is_planned_as_hundreds_of_frames_not_charged_opencvs_import_each_frame(tmp_path):
    # A fresh process, where OpenCV is not loaded yet: charged its import, each frame's plan took numpy's
    # passes, 11x slower on 1080p, for the whole clip.
    import cv2  # noqa: F401  (the oracle's plan: the import already paid)

    from convcli.engine import make_plan

    src = tmp_path / "clip.mkv"
    make_clip(src, frames=3, size=(640, 360))
    run = convcli_process("filter", src, "-k", "gaussian:sigma=2", "--explain", "--json", text=True)
    assert run.returncode == 0, run.stderr
    expected = make_plan((360, 640), resolve("gaussian:sigma=2", ndim=2).weights[0], x_dtype="float32")
    assert json.loads(run.stdout)[0]["methods"] == [expected.method] == ["opencv"]


@pytest.mark.parametrize("codec, container", [("libvpx-vp9", "webm"), ("mjpeg", "avi"), ("prores_ks", "mov"),
                                              ("libsvtav1", "mp4"), ("libx265", "mkv")])
def test_every_container_and_codec_comes_back_as_itself(tmp_path, codec, container):
    src = tmp_path / f"clip.{container}"
    pix_fmt = {"prores_ks": "yuv422p10le", "mjpeg": "yuvj420p"}.get(codec, "yuv420p")
    make_clip(src, codec=codec, pix_fmt=pix_fmt, frames=6, smooth=True, colour={})
    run = _ok(convcli("filter", src, "-k", "box:3", "-o", tmp_path / f"out.{container}"))
    assert "warning" not in run.stderr
    before, after = stream_facts(src), stream_facts(tmp_path / f"out.{container}")
    assert (after["codec"], after["pix_fmt"], after["frames"], after["size"]) == (
        before["codec"], before["pix_fmt"], 6, before["size"])


@pytest.mark.parametrize("codec", ["hevc", "av1"])
def test_the_encoders_own_logs_stay_off_the_terminal(tmp_path, codec):
    """x265 and SVT-AV1 write to stderr by themselves, past FFmpeg's log: convcli keeps them quiet."""
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=4, smooth=True)
    run = convcli_process("filter", src, "-k", "box:3", "--codec", codec, "-o", tmp_path / "out.mkv")
    assert run.returncode == 0 and run.stderr == b""
    assert stream_facts(tmp_path / "out.mkv")["codec"] == codec


def test_codec_and_pixel_format_change_when_asked(tmp_path):
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=6)
    _ok(convcli("filter", src, "-k", "box:3", "--codec", "h264", "--pix-fmt", "yuv444p", "-o", tmp_path / "o.mkv"))
    facts = stream_facts(tmp_path / "o.mkv")
    assert (facts["codec"], facts["pix_fmt"]) == ("h264", "yuv444p")
    _ok(convcli("filter", src, "-k", "sobel", "--pix-fmt", "gray", "-o", tmp_path / "grey.mkv"))
    assert [p.shape for p in read_planes(tmp_path / "grey.mkv")[0]] == [(48, 64)]


def test_a_pipe_carries_a_video_both_ways(tmp_path):
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=6, audio=True)
    run = _ok(convcli("filter", "-", "-k", "box:3", "-o", "-", input=src.read_bytes()))
    (tmp_path / "piped.mkv").write_bytes(run.stdout_bytes)
    assert stream_facts(tmp_path / "piped.mkv")["frames"] == 6
    assert packet_digests(tmp_path / "piped.mkv") == packet_digests(src)


def test_a_folder_of_videos_runs_as_a_batch(tmp_path):
    (tmp_path / "in").mkdir()
    make_clip(tmp_path / "in" / "a.mkv", frames=4)
    make_clip(tmp_path / "in" / "b.mp4", codec="libx264", frames=4)
    (tmp_path / "in" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100)
    run = convcli("filter", tmp_path / "in", "-o", tmp_path / "out", "-k", "box:3", "-j", "2", "--json")
    assert run.exit_code == 1
    records = {os.path.basename(r["input"]): r for r in map(__import__("json").loads, run.stdout.splitlines())}
    assert records["a.mkv"]["status"] == records["b.mp4"]["status"] == "ok"
    assert records["a.mkv"]["output_shape"] == [4, 48, 64]
    assert records["broken.mp4"]["status"] == "failed" and "cannot open the video" in records["broken.mp4"]["error"]
    assert stream_facts(tmp_path / "out" / "b.mp4")["frames"] == 4 and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- damage and interruption
def test_a_clip_cut_short_is_filtered_as_far_as_it_decodes_with_one_warning(tmp_path):
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=24)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size * 6 // 10])
    run = _ok(convcli("filter", cut, "-k", "box:3", "-o", tmp_path / "out.mkv"))
    decoded = len(read_planes(cut))
    assert 0 < decoded < 24 and len(read_planes(tmp_path / "out.mkv")) == decoded
    assert run.stderr.count("\n") == 1 and f"{decoded} of 24 frames" in run.stderr
    failed = convcli("filter", cut, "-k", "box:3", "--fail-fast", "-o", tmp_path / "strict.mkv")
    assert failed.exit_code == 1 and not (tmp_path / "strict.mkv").exists()


def test_a_file_that_cannot_be_decoded_at_all_fails_in_one_line(tmp_path):
    src = tmp_path / "clip.mp4"
    make_clip(src, codec="libx264", frames=12)  # the index (moov) is written last: a cut file has none
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    run = convcli("filter", cut, "-k", "box:3", "-o", tmp_path / "out.mp4")
    assert run.exit_code == 1 and run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"convcli: error: {cut}: cannot open the video")
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


def test_a_corrupt_packet_is_reported_with_its_time_and_fails_fast_when_asked(tmp_path):
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=20, corrupt=10)  # 25 fps: the packet at 0.400 s
    run = _ok(convcli("filter", src, "-k", "box:3", "-o", tmp_path / "out.mkv"))
    assert "corrupt packet at 0.400 s" in run.stderr and run.stderr.count("\n") == 1
    assert len(read_planes(tmp_path / "out.mkv")) == 19
    failed = convcli("filter", src, "-k", "box:3", "--fail-fast", "-o", tmp_path / "strict.mkv")
    assert failed.exit_code == 1 and "corrupt packet at 0.400 s" in failed.stderr
    assert not (tmp_path / "strict.mkv").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_mid_clip_leaves_no_output_and_no_temporary(tmp_path, signum):
    src = tmp_path / "long.mkv"
    make_clip(src, frames=300, size=(320, 240))
    out = tmp_path / "out.mkv"
    process = subprocess.Popen([sys.executable, "-m", "convcli", "filter", src, "-k", "gaussian:sigma=3,3,3",
                                "-o", out], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # until the encoder has opened its temporary output
    process.send_signal(signum)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == -signum, stderr
    assert b"Traceback" not in stderr and not out.exists() and leftovers(tmp_path) == []


def _peak_mib(args) -> float:
    """The peak resident memory of a ``convcli`` process, in MiB (the kernel's own accounting, via wait4)."""
    process = subprocess.Popen([sys.executable, "-m", "convcli", *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss / 1024


def test_memory_stays_flat_whatever_the_clip_length(tmp_path):
    """Ten times the frames, the same memory: 240 frames of 480x360 held whole would be 62 MB more."""
    make_clip(tmp_path / "short.mkv", frames=24, size=(480, 360), smooth=True)
    make_clip(tmp_path / "long.mkv", frames=240, size=(480, 360), smooth=True)
    short = _peak_mib(["filter", tmp_path / "short.mkv", "-k", "gaussian:sigma=1,1,1", "-o", tmp_path / "s.mkv"])
    long = _peak_mib(["filter", tmp_path / "long.mkv", "-k", "gaussian:sigma=1,1,1", "-o", tmp_path / "l.mkv"])
    assert long < short + 20, (short, long)


def test_progress_goes_to_a_callback_frame_by_frame(tmp_path):
    from convcli.pipeline.filter import filter_file
    from convcli.pipeline.options import FilterOptions

    src = tmp_path / "clip.mp4"
    make_clip(src, codec="libx264", frames=10)
    seen = []
    report = filter_file(str(src), str(tmp_path / "out.mp4"), FilterOptions(kernels=("box:3,1,1",)),
                         on_frames=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 10) for i in range(1, 11)] and report.output_shape == (10, 48, 64)


# --------------------------------------------------------------------------- usage
@pytest.mark.parametrize("args, flag", [
    (["--range", "rescale"], "--range"),
    (["--axes", "z,y,x"], "--axes"),
    (["--crf", "20"], "--crf"),  # FFV1 is lossless
    (["--bitrate", "5M"], "--bitrate"),
    (["--codec", "nonsense"], "--codec"),
    (["--padding", "valid"], "--padding"),  # 4:2:0 chroma cannot follow a size change by the kernel's reach
    (["--pix-fmt", "yuv9000p"], "--pix-fmt"),
    (["--kind", "volume"], "--kind"),
    (["--colorspace", "linear"], "--colorspace"),  # an image's transfer curve, not a video's
    (["--depth", "16"], "--depth"),  # a video's sample type is its pixel format
    (["--quality", "80"], "--quality"),  # a video's quality is --crf or --bitrate
    (["--alpha", "premultiply"], "--alpha"),
    (["--gain", "-6"], "--gain"),  # the soundtrack is copied, never filtered
    (["-k", "median:3"], "--kernel"),  # a rank filter's footprint is not weights to sum frames with
    (["-k", "maxpool:2"], "--kernel"),
])
def test_options_that_cannot_apply_to_a_video_are_usage_errors(tmp_path, args, flag):
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=4)
    run = convcli("filter", src, "-k", "box:3", *args, "-o", tmp_path / "out.mkv")
    assert run.exit_code == 2 and run.stderr.startswith(f"convcli: error: {flag}") and run.stderr.count("\n") == 1
    assert not (tmp_path / "out.mkv").exists()


def test_rgb_is_a_video_colour_space_and_an_image_refuses_it(tmp_path):
    import numpy as np
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    run = convcli("filter", photo, "-k", "box:3", "--colorspace", "rgb", "-o", tmp_path / "out.png")
    assert run.exit_code == 2 and run.stderr.startswith("convcli: error: --colorspace: rgb converts a video's")
    assert not (tmp_path / "out.png").exists()


def test_a_video_named_for_another_container_is_read_by_its_content(tmp_path):
    src = tmp_path / "really_mkv.mp4"
    make_clip(src, container="matroska", frames=4)
    _ok(convcli("filter", src, "-k", "box:3", "-o", tmp_path / "out.mkv"))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    run = convcli("filter", text, "-k", "box:3", "-o", tmp_path / "o.mp4")
    assert run.exit_code == 1 and "not a MP4 video" in run.stderr


def test_without_pyav_a_video_asks_for_the_extra_in_one_line(tmp_path):
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=2)
    code = ("import sys; sys.modules['av'] = None; from convcli.cli import main; "
            f"sys.exit(main(['filter', {str(src)!r}, '-k', 'box:3', '-o', {str(tmp_path / 'o.mkv')!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr == 'convcli: error: video files need PyAV: pip install "convcli[video]"\n'


def test_start_up_loads_no_video_library():
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "convcli", "--version"], capture_output=True,
                         text=True, check=True)
    assert " av" not in run.stderr.replace("|", " ").split("\n")[-1] and "| av" not in run.stderr


# --------------------------------------------------------------------------- classify
def test_classify_names_a_frame_every_interval_as_it_names_the_photo(tmp_path):
    from PIL import Image

    from conftest import EXAMPLES
    from video_clips import make_photo_clip

    rgb = np.asarray(Image.open(EXAMPLES / "photo.jpg").convert("RGB"))[:300, :450]
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    photo = _ok(convcli("classify", tmp_path / "photo.png", "--top", "1")).stdout.split("\t")[2]
    make_photo_clip(tmp_path / "clip.mkv", rgb, frames=24)
    run = _ok(convcli("classify", tmp_path / "clip.mkv", "--every", "400ms", "--top", "1", "--json"))
    rows = [__import__("json").loads(line) for line in run.stdout.splitlines()]
    assert [(r["time"], r["frame"]) for r in rows] == [(0.0, 0), (0.4, 10), (0.8, 20)]
    assert {r["predictions"][0]["label"] for r in rows} == {photo}
    # Stored on its side with a rotation to undo, the clip is classified upright, as the photo.
    make_photo_clip(tmp_path / "turned.mkv", np.ascontiguousarray(np.rot90(rgb, -1)), frames=2, rotation=90)
    lines = _ok(convcli("classify", tmp_path / "turned.mkv", "--every", "1s", "--top", "1")).stdout.splitlines()
    assert lines == [f"{tmp_path / 'turned.mkv'}#t=0\t1\t{photo}\t" + lines[0].split("\t")[3]]


def test_a_video_in_a_folder_is_one_json_line_holding_its_frames(tmp_path):
    from PIL import Image

    from conftest import EXAMPLES
    from video_clips import make_photo_clip

    rgb = np.asarray(Image.open(EXAMPLES / "photo.jpg").convert("RGB"))[:300, :450]
    (tmp_path / "in").mkdir()
    Image.fromarray(rgb).save(tmp_path / "in" / "photo.png")
    make_photo_clip(tmp_path / "in" / "clip.mkv", rgb, frames=24)
    run = _ok(convcli("classify", tmp_path / "in", "--every", "400ms", "--top", "1", "--json", "-j", "1"))
    rows = {os.path.basename(r["input"]): r for r in map(json.loads, run.stdout.splitlines())}
    assert set(rows) == {"photo.png", "clip.mkv"} and all(r["status"] == "ok" for r in rows.values())
    label = rows["photo.png"]["predictions"][0]["label"]
    frames = rows["clip.mkv"]["frames"]
    assert [(f["time"], f["frame"]) for f in frames] == [(0.0, 0), (0.4, 10), (0.8, 20)]
    assert {f["predictions"][0]["label"] for f in frames} == {label}
