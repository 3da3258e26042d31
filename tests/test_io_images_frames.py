"""Animated GIF, WebP and PNG: every frame read, filtered on its own, and written back with its timing."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import convcli
from convcli import io
from convcli.engine import correlate

RNG = np.random.default_rng(29)
PALETTE = RNG.integers(0, 256, (16, 3)).astype(np.uint8)


def frames(count=3, alpha=False, size=(9, 11)):
    """Frames of at most 16 colours (a GIF holds them exactly), optionally with clear pixels."""
    out = []
    for _ in range(count):
        index = RNG.integers(0, 16, size)
        rgb = PALETTE[index]
        out.append(Image.fromarray(np.dstack([rgb, np.where(index == 0, 0, 255).astype(np.uint8)]), "RGBA")
                   if alpha else Image.fromarray(rgb))
    return out


def shown(sig):
    """What a viewer shows of each frame: colour where it is not clear, and the alpha."""
    data = sig.data.astype(np.int64)
    if data.shape[-1] == 4:
        data[..., :3][data[..., 3] == 0] = 0
    return data


def save(path, images, **options):
    images[0].save(path, save_all=True, append_images=images[1:], **options)


CASES = [
    ("gif", {"duration": [40, 50, 60], "loop": 0, "disposal": [1, 2, 1]}, False),
    ("gif", {"duration": [30, 70, 20], "loop": 5, "disposal": [2, 3, 1]}, True),
    ("webp", {"duration": [100, 200, 300], "loop": 3, "lossless": True}, True),
    ("webp", {"duration": [80, 80, 80], "loop": 0, "lossless": True}, False),
    ("png", {"duration": [100, 200, 300], "loop": 2, "disposal": [0, 1, 2], "blend": [0, 1, 0]}, True),
    ("png", {"duration": [50, 50, 50], "loop": 0, "disposal": [1, 0, 0], "blend": [1, 1, 1]}, False),
]


@pytest.mark.parametrize("ext,options,alpha", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_identity_keeps_every_frame_its_duration_loop_and_disposal(tmp_path, ext, options, alpha):
    src, out = tmp_path / f"in.{ext}", tmp_path / f"out.{ext}"
    save(src, frames(alpha=alpha), **options)
    result = convcli("filter", str(src), "-k", "identity", "--alpha", "channel", "-o", str(out))
    assert result.exit_code == 0 and result.stderr == "", result.output
    before, after = io.read(src), io.read(out)
    assert after.frames and after.data.shape == before.data.shape and before.data.shape[:3] == (3, 9, 11)
    np.testing.assert_array_equal(shown(after), shown(before))
    assert after.meta["animation"] == before.meta["animation"]
    assert after.meta["animation"]["durations"] == pytest.approx(options["duration"])
    assert after.meta["animation"]["loop"] == options["loop"]
    with Image.open(out) as im:
        assert im.n_frames == 3


@pytest.mark.parametrize("ext", ["gif", "webp", "png"])
def test_each_frame_is_filtered_on_its_own(tmp_path, ext):
    images = [Image.fromarray(np.full((12, 12), v, np.uint8)).convert("RGB") for v in (0, 255, 0, 255)]
    for image, row in zip(images, (2, 5, 8, 3)):
        image.paste((120, 30, 200), (0, row, 12, row + 1))
    save(tmp_path / f"in.{ext}", images, duration=[100] * 4, lossless=True)
    out = tmp_path / "out.npy"
    assert convcli("filter", str(tmp_path / f"in.{ext}"), "-k", "box:3", "-o", str(out)).exit_code == 0
    sig = io.read(tmp_path / f"in.{ext}")
    want = np.stack([correlate(frame.astype(np.float64), np.ones((3, 3)) / 9, channel_axis=-1) for frame in sig.data])
    np.testing.assert_allclose(np.load(out), want, atol=1e-4)  # no mixing across frames


def test_a_gif_animation_becomes_an_animated_png_and_webp(tmp_path):
    save(tmp_path / "a.gif", frames(), duration=[40, 50, 60], loop=0, disposal=[1, 2, 1])
    gif = io.read(tmp_path / "a.gif").data.astype(np.int64)
    for ext in ("png", "webp"):
        out = tmp_path / f"a.{ext}"
        assert convcli("filter", str(tmp_path / "a.gif"), "-k", "identity", "-o", str(out)).exit_code == 0
        sig = io.read(out)
        assert sig.data.shape[:3] == gif.shape[:3] and sig.meta["animation"]["durations"] == pytest.approx([40, 50, 60])
        if ext == "png":  # WebP from a GIF is lossy, at quality 90
            np.testing.assert_array_equal(sig.data[..., :3], gif)


def test_frames_into_a_single_picture_format_are_refused_not_cut(tmp_path):
    save(tmp_path / "a.gif", frames(), duration=[40, 50, 60])
    out = tmp_path / "a.jpg"
    result = convcli("filter", str(tmp_path / "a.gif"), "-k", "box:3", "-o", str(out))
    # An output format that cannot hold the result: a usage error, like an unknown extension.
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "3 frames cannot be written as JPEG image" in result.stderr and not out.exists()


def test_frames_into_tiff_say_that_the_timing_is_not_kept(tmp_path):
    save(tmp_path / "a.gif", frames(), duration=[40, 50, 60])
    out = tmp_path / "a.tif"
    result = convcli("filter", str(tmp_path / "a.gif"), "-k", "identity", "-o", str(out))
    assert result.exit_code == 0 and "frame durations" in result.stderr
    back = io.read(out, kind="image")
    np.testing.assert_array_equal(back.data, io.read(tmp_path / "a.gif").data)


def test_frames_of_an_animation_count_against_the_memory_budget(tmp_path):
    save(tmp_path / "a.gif", frames(count=40, size=(64, 64)), duration=[10] * 40)
    result = convcli("filter", str(tmp_path / "a.gif"), "-k", "box:3", "--memory-budget", "200K",
                     "-o", str(tmp_path / "o.gif"))
    assert result.exit_code == 1 and "40x64x64x4" in result.stderr


def test_16_bit_frames_into_an_animated_png_are_8_bit_and_say_so(tmp_path):
    import tifffile

    pages = RNG.integers(0, 65536, (3, 10, 12, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "p.tif", pages, photometric="rgb", metadata=None)
    result = convcli("filter", str(tmp_path / "p.tif"), "--kind", "image", "-k", "identity", "-o",
                     str(tmp_path / "p.png"))
    assert result.exit_code == 0 and "PNG frames cannot store mode RGB;16: written as RGB" in result.stderr
    np.testing.assert_array_equal(io.read(tmp_path / "p.png").data, np.floor(pages / 257 + 0.5).astype(np.uint8))
