"""Transparency under rank, morphology and pooling kernels: the default does what each kind of operator needs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import convcli

OPERATORS = ["median:3", "min:3", "max:3", "erode:disk=1", "dilate:square=3", "open:square=3", "tophat:square=3",
             "maxpool:2", "avgpool:2", "avgpool:3,ceil=true"]


def _pictures(tmp_path, transparent: bool):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    alpha = np.full((24, 30), 255, np.uint8)
    if transparent:
        alpha[:6, :8] = 0
        alpha[18:, 20:] = 128
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    return rgb, alpha


def _filtered(tmp_path, name, spec):
    result = convcli("filter", tmp_path / name, "-k", spec, "-o", tmp_path / f"out-{name}", "-q")
    assert result.exit_code == 0, result.output
    return np.asarray(Image.open(tmp_path / f"out-{name}"))


@pytest.mark.parametrize("spec", OPERATORS)
def test_an_opaque_rgba_image_filters_as_its_rgb(tmp_path, spec):
    _pictures(tmp_path, transparent=False)
    with_alpha, without = _filtered(tmp_path, "rgba.png", spec), _filtered(tmp_path, "rgb.png", spec)
    np.testing.assert_array_equal(with_alpha[..., :3], without)
    assert (with_alpha[..., 3] == 255).all()


@pytest.mark.parametrize("spec", [s for s in OPERATORS if not s.startswith(("avgpool", "tophat"))])
def test_a_selecting_operator_takes_alpha_along_with_the_colour(tmp_path, spec):
    """A median, an erosion or a max pool picks samples: alpha is filtered as a channel (a dilated logo grows)."""
    rgb, alpha = _pictures(tmp_path, transparent=True)
    out = _filtered(tmp_path, "rgba.png", spec)
    Image.fromarray(alpha).save(tmp_path / "alpha.png")
    np.testing.assert_array_equal(out[..., 3], _filtered(tmp_path, "alpha.png", spec))


def test_an_average_pool_premultiplies_so_hidden_colour_never_bleeds(tmp_path):
    rgb, alpha = _pictures(tmp_path, transparent=True)
    out = _filtered(tmp_path, "rgba.png", "avgpool:2")
    first = _filtered(tmp_path, "rgba.png", "avgpool:2")
    rgba = np.dstack([rgb, alpha]).astype(np.uint8)
    rgba[:6, :8, :3] = 255 - rgba[:6, :8, :3]  # another colour under the transparent pixels
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(_filtered(tmp_path, "rgba.png", "avgpool:2"), first)
    assert out.shape == (12, 15, 4)


@pytest.mark.parametrize("spec", ["tophat:square=3", "blackhat:disk=1", "gradient:square=3"])
def test_a_morphological_difference_is_an_edge_detector_and_leaves_alpha_as_it_was(tmp_path, spec):
    rgb, alpha = _pictures(tmp_path, transparent=True)
    out = _filtered(tmp_path, "rgba.png", spec)
    np.testing.assert_array_equal(out[..., 3], alpha)
