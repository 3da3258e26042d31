"""Class-activation map rendering: stretch, colours, and where the heat lands on the photo."""
from __future__ import annotations

import numpy as np
from PIL import Image

from convcli.nn.cam import BLEND, DIM, heat_colours, normalise, overlay
from convcli.pipeline.classify import write_cam
from convcli.nn.preprocess import Photo, center_crop_box


def test_normalise_stretches_to_0_1_and_a_flat_map_is_zero():
    np.testing.assert_allclose(normalise(np.array([[2.0, 4.0], [6.0, 10.0]])), [[0, 0.25], [0.5, 1]])
    assert not normalise(np.full((3, 3), 7.0)).any()
    assert not normalise(np.array([[np.nan, 1.0]])).any()


def test_the_ramp_runs_from_dark_blue_to_dark_red():
    ends = heat_colours(np.array([0.0, 0.5, 1.0]))
    assert ends[0].tolist() == [0, 0, 128] and ends[2].tolist() == [128, 0, 0]
    assert ends[1][1] == 255  # green in the middle
    assert heat_colours(np.array([-1.0, 2.0])).tolist() == [[0, 0, 128], [128, 0, 0]]


def test_the_heat_lands_where_the_map_is_strong_and_outside_the_crop_is_dimmed():
    rgb = np.full((60, 90, 3), 200, np.uint8)
    photo = Photo(rgb, center_crop_box(90, 60))  # a 52x52 square at (19, 4)
    cam = np.zeros((7, 7))
    cam[0, 6] = 1.0  # top right of what the network saw
    out = overlay(photo, cam).astype(np.float64)
    left, top, right, bottom = photo.box
    assert out.shape == rgb.shape
    np.testing.assert_allclose(out[:, :left], np.rint(200 * DIM))  # never seen: dimmed
    hot, cold = out[top + 1, right - 2], out[bottom - 2, left + 1]
    expected_hot = (1 - BLEND) * 200 + BLEND * np.array([128, 0, 0])
    expected_cold = (1 - BLEND) * 200 + BLEND * np.array([0, 0, 128])
    assert np.abs(hot - expected_hot).max() <= 40 and np.abs(cold - expected_cold).max() <= 1


def test_write_cam_leaves_only_the_png(tmp_path):
    photo = Photo(np.zeros((20, 30, 3), np.uint8), center_crop_box(30, 20))
    dest = tmp_path / "map.png"
    write_cam(str(dest), photo, np.eye(7))
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]
    with Image.open(dest) as im:
        assert im.format == "PNG" and im.size == (30, 20)


def test_a_large_photo_is_drawn_on_a_bounded_copy_with_the_heat_in_the_same_place():
    from convcli.nn.cam import MAX_SIDE

    rgb = np.full((MAX_SIDE + 400, 2 * MAX_SIDE, 3), 200, np.uint8)
    photo = Photo.of(rgb)
    cam = np.zeros((7, 7))
    cam[0, 6] = 1.0
    out = overlay(photo, cam)
    scale = MAX_SIDE / rgb.shape[1]
    assert out.shape == (round(rgb.shape[0] * scale), MAX_SIDE, 3)
    left, top, right, bottom = (round(v * scale) for v in photo.box)
    assert np.abs(out[:, : left - 2].astype(int) - round(200 * DIM)).max() <= 1  # never seen: dimmed
    hot = out[top + 2, right - 3].astype(float)
    assert np.abs(hot - ((1 - BLEND) * 200 + BLEND * np.array([128, 0, 0]))).max() <= 40
