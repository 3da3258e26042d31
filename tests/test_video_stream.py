"""A clip filtered as a stream of frames equals its (t, y, x) volume filtered whole, for every geometry and border.

The streaming stages (convcli.pipeline.video) never hold the clip: they keep
the frames a window reaches and read the border back from them.  Here they
run on pictures made in memory (no codec), and the oracle is the engine's
``correlate`` on the stacked volume, in float64, for any kernel over time,
stride, dilation, padding and border mode, alone and in a chain.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from convcli.engine import correlate
from convcli.errors import ParameterError, UsageError
from convcli.io.video import Picture, Plane
from convcli.kernels import Kernel
from convcli.pipeline.options import FilterOptions, Geometry
from convcli.pipeline.video import build_stages, run_stages, split_in_time

HEIGHT, WIDTH = 6, 5
BORDERS = ["reflect", "symmetric", "replicate", "zeros", "circular", "constant:5"]


def _pictures(luma: np.ndarray, chroma: np.ndarray) -> list[Picture]:
    return [Picture([luma[t], chroma[t]], pts=40 * t + t * t, carried=[f"packet {t}"]) for t in range(len(luma))]


def _stream(weights: list[np.ndarray], geometry: Geometry, luma, chroma, colorspace="stored"):
    """Run the chain of ``weights`` over the pictures; return the (luma, chroma) volumes, the pts and the packets."""
    kernels = [Kernel(f"k{i}", "inline", (w,)) for i, w in enumerate(weights)]
    options = FilterOptions(kernels=tuple(k.spec for k in kernels), geometry=geometry, precision="float64",
                            colorspace=colorspace)
    planes = (Plane("luma", "uint8", 8, WIDTH, HEIGHT), Plane("chroma", "uint8", 8, WIDTH, HEIGHT))
    pictures = _pictures(luma, chroma)

    def last_pictures(count):
        return len(pictures), {i: pictures[i] for i in range(max(0, len(pictures) - count), len(pictures))}

    stages = build_stages(kernels, 3, options, planes, frames=len(pictures), last_pictures=last_pictures)
    out = list(run_stages(stages, iter(pictures)))
    carried = [p for picture in out for p in picture.carried] + [p for s in reversed(stages) for p in s.tail]
    return (np.stack([p.planes[0] for p in out]), np.stack([p.planes[1] for p in out]), [p.pts for p in out],
            carried)


def _centre_taps(weights):
    """Each kernel as one tap at its centre: what a plane left unfiltered (--colorspace luma) goes through."""
    taps = []
    for w in weights:
        tap = np.zeros(w.shape)
        tap[tuple((n - 1) // 2 for n in w.shape)] = 1.0
        taps.append(tap)
    return taps


def _whole(weights, geometry: Geometry, x, neutral=0.0):
    args = {"padding": geometry.padding, "pad_mode": geometry.pad_mode, "dilation": geometry.dilation,
            "precision": "float64"}
    values = x.astype(np.float64) - neutral
    for i, w in enumerate(weights):
        values = correlate(values, w, stride=geometry.stride if i == len(weights) - 1 else 1, **args)
    return values + neutral


@given(frames=st.integers(1, 9), taps=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 2),
       padding=st.sampled_from(["same", "valid", "full", 0, 1, 3]), pad_mode=st.sampled_from(BORDERS),
       chain=st.booleans(), colorspace=st.sampled_from(["stored", "luma"]), seed=st.integers(0, 2 ** 16))
def test_a_streamed_clip_equals_its_volume_correlated_whole(frames, taps, stride, dilation, padding, pad_mode, chain,
                                                            colorspace, seed):
    rng = np.random.default_rng(seed)
    luma = rng.integers(0, 256, (frames, HEIGHT, WIDTH), dtype=np.uint8)
    chroma = rng.integers(0, 256, (frames, HEIGHT, WIDTH), dtype=np.uint8)
    weights = [rng.standard_normal((taps, 2, 3))]
    if chain:
        weights.insert(0, rng.standard_normal((2, 3, 1)))
    geometry = Geometry(stride=(stride, 1, 2), padding=padding if isinstance(padding, str) else (padding, 1, 0),
                        dilation=(dilation, 1, 1), pad_mode=pad_mode)
    if pad_mode == "circular" and chain and (taps > 1 or padding not in ("same", "valid", "full", 0)):
        # The circular border needs the clip's last frames first: only the first kernel may have it in time.
        with pytest.raises(UsageError, match="only the first kernel"):
            _stream(weights, geometry, luma, chroma, colorspace)
        return
    try:
        expected_luma = _whole(weights, geometry, luma)
    except ParameterError:
        with pytest.raises(ParameterError):
            _stream(weights, geometry, luma, chroma, colorspace)
        return
    got_luma, got_chroma, pts, carried = _stream(weights, geometry, luma, chroma, colorspace)
    np.testing.assert_allclose(got_luma, expected_luma, rtol=1e-9, atol=1e-7)
    chroma_weights = weights if colorspace == "stored" else _centre_taps(weights)
    np.testing.assert_allclose(got_chroma, _whole(chroma_weights, geometry, chroma, neutral=128.0), rtol=1e-9,
                               atol=1e-7)
    # Every packet that came with a picture goes on, once and in order.
    assert carried == [f"packet {t}" for t in range(frames)]
    assert pts == sorted(set(pts)) and len(pts) == len(got_luma)


def test_an_output_frame_keeps_the_timestamp_of_the_frame_at_its_window_centre():
    luma = np.zeros((7, HEIGHT, WIDTH), np.uint8)
    box = [np.full((3, 1, 1), 1 / 3)]
    times = [40 * t + t * t for t in range(7)]
    assert _stream(box, Geometry(stride=1, pad_mode="reflect"), luma, luma)[2] == times
    assert _stream(box, Geometry(stride=(2, 1, 1), padding="valid"), luma, luma)[2] == times[1:6:2]
    assert _stream(box, Geometry(stride=(2, 1, 1)), luma, luma)[2] == times[0::2]
    pair = [np.full((2, 1, 1), 1 / 2)]  # an even window's centre lies between two frames: the first of them
    assert _stream(pair, Geometry(padding="valid"), luma, luma)[2] == times[:6]


@pytest.mark.parametrize("shape", [(1, 3, 3), (3, 1, 1), (3, 3, 3), (5, 2, 4)])
def test_the_split_in_time_sums_back_to_the_kernel_in_few_terms(shape):
    rng = np.random.default_rng(len(shape))
    random = rng.standard_normal(shape)
    separable = np.multiply.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1:]))
    for weights, most in ((random, shape[0]), (separable, 1)):
        terms = split_in_time(weights)
        assert len(terms) <= most
        np.testing.assert_allclose(sum(np.multiply.outer(a, b) for a, b in terms), weights, atol=1e-12)
    if shape == (3, 3, 3):  # a full-rank kernel: each frame filtered by its slice, no sums of frames
        assert all(sorted(a.tolist()) == [0, 0, 1] for a, _ in split_in_time(random))
