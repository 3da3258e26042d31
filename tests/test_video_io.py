"""The pieces under a streamed video: detection by content, planar layouts, the frames' weighted sum, the stream threads."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from convcli.engine import weighted_sum
from convcli.io.detect import sniff
from convcli.parallel import stream_ahead, stream_behind


@pytest.mark.parametrize("head, fmt", [
    (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "mp4"),
    (b"\x00\x00\x00\x1cftypmp42\x00\x00\x00\x00", "mp4"),
    (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "mov"),
    (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "mov"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "webm"),
    (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", "mkv"),
    (b"RIFF\x00\x10\x00\x00AVI LIST", "avi"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", None),  # a HEIF photo
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", None),  # an AVIF photo
    (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", None),  # AAC audio
    (b"RIFF\x00\x10\x00\x00WAVEfmt ", "wav"),
    (b"1234free and some text", None),
])
def test_a_video_container_is_told_by_its_first_bytes(head, fmt):
    assert sniff(head) == fmt


def test_a_packed_pixel_format_is_filtered_in_its_planar_twin():
    pytest.importorskip("av")
    from convcli.io.video import planar_twin, plane_layout

    twins = {"yuv420p": "yuv420p", "nv12": "yuv420p", "p010le": "yuv420p10le", "yuyv422": "yuv422p",
             "rgb24": "gbrp", "bgra": "gbrap", "gray16be": "gray16le", "yuv444p": "yuv444p"}
    assert {fmt: planar_twin(fmt) for fmt in twins} == twins
    assert planar_twin("yuv420p", "rgb") == "gbrp" and planar_twin("yuv420p10le", "rgb") == "gbrp10le"
    roles = [(p.role, p.bits, p.width, p.height) for p in plane_layout("yuv420p10le", 64, 48)]
    assert roles == [("luma", 10, 64, 48), ("chroma", 10, 32, 24), ("chroma", 10, 32, 24)]
    assert [p.role for p in plane_layout("yuv444p", 8, 8)] == ["luma", "chroma", "chroma"]
    assert [p.neutral for p in plane_layout("yuv420p10le", 8, 8)][1:] == [512, 512]


def test_a_whole_clip_reads_as_rgb_frames_and_writes_back(tmp_path):
    pytest.importorskip("av")
    from video_clips import make_clip, stream_facts

    from convcli import io

    make_clip(tmp_path / "clip.mkv", frames=5, smooth=True)
    sig = io.read(tmp_path / "clip.mkv")
    assert sig.frames and sig.data.shape == (5, 48, 64, 3) and sig.data.dtype == np.uint8
    assert sig.spatial_ndim == 2 and sig.meta["frame_rate"] == 25
    io.write(sig, tmp_path / "copy.mp4")
    facts = stream_facts(tmp_path / "copy.mp4")
    assert (facts["codec"], facts["frames"], facts["size"], facts["rate"]) == ("h264", 5, (64, 48), 25)
    back = io.read(tmp_path / "copy.mp4").data.astype(int)
    assert np.abs(back - sig.data).mean() < 4  # H.264 at crf 23 on smooth ramps


def test_the_weighted_sum_of_frames_is_numpys_in_the_compute_type():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (700, 900), dtype=np.uint8) for _ in range(3)]
    weights = [0.25, -1.0, 1.0]
    expected = sum(w * f.astype(np.float64) for w, f in zip(weights, frames))
    got = weighted_sum(frames, weights)
    assert got.dtype == np.float32 and np.allclose(got, expected, atol=1e-3)
    assert weighted_sum(frames, weights, dtype=np.float64).dtype == np.float64
    with_nan = [np.full((4, 4), np.nan), np.ones((4, 4))]
    assert np.array_equal(weighted_sum(with_nan, [0.0, 2.0]), np.full((4, 4), 2.0))  # a zero tap is not read
    assert not weighted_sum([np.ones(3)], [0.0]).any()


def test_a_producer_ahead_runs_beside_the_consumer_and_its_failure_is_raised_there():
    made = []

    def produce():
        for i in range(5):
            made.append(i)
            yield i
        raise ValueError("the decoder broke")

    items = stream_ahead(produce(), depth=2, name="test")
    try:
        assert [next(items) for _ in range(5)] == list(range(5))
        with pytest.raises(ValueError, match="decoder broke"):
            next(items)
    finally:
        items.close()


def test_closing_the_consumer_stops_the_producer_and_runs_its_cleanup():
    cleaned = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            cleaned.set()

    items = stream_ahead(endless(), depth=2, name="test")
    assert next(items) == 0
    items.close()
    assert cleaned.is_set() and not items._thread.is_alive()


def test_a_consumer_behind_keeps_order_and_its_failure_reaches_the_feeder():
    seen = []
    sink = stream_behind(seen.append, depth=2, name="test")
    for i in range(10):
        sink.put(i)
    sink.close()
    assert seen == list(range(10))

    def fail(item):
        if item == 3:
            raise OSError("disk full")
        time.sleep(0.001)

    sink = stream_behind(fail, depth=1, name="test")
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            sink.put(i)
        sink.close()
    stopped = stream_behind(lambda item: time.sleep(0.05), depth=1, name="test")
    stopped.put(1)
    stopped.abort()
    assert not stopped._thread.is_alive()
