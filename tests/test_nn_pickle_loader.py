"""The restricted unpickler: real checkpoints load, crafted ones are refused without running anything."""
from __future__ import annotations

import copyreg
import os
import pickle
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES, convcli_process, peak_memory as _peak_memory
from convcli.nn.pickle_loader import MAX_DEPTH, MAX_PICKLE_BYTES, CheckpointError, load_state_dict, parse_checkpoint
from convcli.nn.weights import source_path


from nn_fixtures import lt  # noqa: E402


# --------------------------------------------------------------------------- good files
def test_the_published_checkpoint_loads_with_every_tensor():
    state = load_state_dict(source_path())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].shape == () and state["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(a).all() for a in state.values())


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"])
def test_every_storage_type_round_trips(dtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 4)) * 50).astype(dtype)
    state = parse_checkpoint(lt.simple_checkpoint({"a": a, "scalar": a[1, 2].copy()}))
    np.testing.assert_array_equal(state["a"], a)
    assert state["a"].dtype == a.dtype and state["scalar"].shape == ()


def test_views_share_a_storage_with_offsets_and_strides():
    data = np.arange(20, dtype=np.float32)
    entries = {
        "transposed": lt.Entry("s", 2, (3, 4), (1, 3)),
        "tail": lt.Entry("s", 15, (5,), (1,)),
        "broadcast": lt.Entry("s", 7, (2, 3), (0, 1)),
        "empty": lt.Entry("s", 0, (0, 4), (4, 1)),
    }
    state = parse_checkpoint(lt.checkpoint_bytes(entries, {"s": data}))
    np.testing.assert_array_equal(state["transposed"], np.lib.stride_tricks.as_strided(data[2:], (3, 4), (4, 12)))
    np.testing.assert_array_equal(state["tail"], data[15:])
    np.testing.assert_array_equal(state["broadcast"], [[7, 8, 9], [7, 8, 9]])
    assert state["empty"].shape == (0, 4)
    for a in state.values():  # copies that own their memory, not views of the file's bytes
        assert a.base is None and a.flags.writeable


def test_zip_checkpoints_load_the_same_tensors():
    data = np.arange(20, dtype=np.float32)
    entries = {"transposed": lt.Entry("s", 2, (3, 4), (1, 3)), "n": lt.Entry("n", 0, (), ())}
    storages = {"s": data, "n": np.array([5], np.int64)}
    legacy = parse_checkpoint(lt.checkpoint_bytes(entries, storages))
    zipped = parse_checkpoint(lt.zip_checkpoint(entries, storages))
    assert set(zipped) == set(legacy) and all(np.array_equal(zipped[k], legacy[k]) for k in legacy)


def test_zip_checkpoints_are_checked_like_legacy_ones(tmp_path):
    entries = {"t": lt.Entry("s", 0, (4,), (1,))}
    storages = {"s": np.zeros(4, np.float32)}
    with pytest.raises(CheckpointError, match="missing from the archive"):
        parse_checkpoint(lt.zip_checkpoint(entries, storages, skip=("s",)))
    with pytest.raises(CheckpointError, match="compressed"):
        parse_checkpoint(lt.zip_checkpoint(entries, storages, compression=zipfile.ZIP_DEFLATED))
    big = {"t": lt.Entry("s", 0, (4,), (1,))}
    with pytest.raises(CheckpointError, match="holds 16 bytes, not the 40 declared"):
        parse_checkpoint(lt.zip_checkpoint(big, storages, main=lt.main_pickle(big, storages, {"s": 10}, legacy=False)))
    canary = tmp_path / "canary"
    evil = pickle.dumps(_Payload(os.system, f"touch {canary}"), protocol=2)
    with pytest.raises(CheckpointError, match="refused to load"):
        parse_checkpoint(lt.zip_checkpoint({}, {}, main=evil))
    assert not canary.exists()


# --------------------------------------------------------------------------- code never runs
class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _wrapped(main_pickle: bytes) -> bytes:
    return lt.checkpoint_bytes({}, {}, main=main_pickle, keys=[])


@pytest.mark.parametrize("where", ["main", "header"])
@pytest.mark.parametrize("func", [os.system, eval, subprocess.call, open])
def test_a_malicious_pickle_is_refused_and_nothing_runs(tmp_path, func, where):
    canary = tmp_path / "canary"
    if func is os.system:
        payload = _Payload(os.system, f"touch {canary}")
    elif func is eval:
        payload = _Payload(eval, f"open({str(canary)!r}, 'w').close()")
    elif func is subprocess.call:
        payload = _Payload(subprocess.call, ["touch", str(canary)])
    else:
        payload = _Payload(open, str(canary), "w")
    blob = pickle.dumps({"w": payload}, protocol=2)
    data = _wrapped(blob) if where == "main" else blob + _wrapped(b"\x80\x02}.")
    with pytest.raises(CheckpointError, match="refused to load"):
        parse_checkpoint(data)
    assert not canary.exists()


def test_the_refusal_names_the_global(tmp_path):
    with pytest.raises(CheckpointError, match=r"posix\.system|os\.system"):
        parse_checkpoint(_wrapped(pickle.dumps(_Payload(os.system, "true"), protocol=2)))


def test_extension_registry_codes_go_through_the_same_check(tmp_path):
    canary = tmp_path / "canary"
    copyreg.add_extension("posix", "system", 0x7E57)
    try:
        blob = pickle.dumps(_Payload(os.system, f"touch {canary}"), protocol=2)
    finally:
        copyreg.remove_extension("posix", "system", 0x7E57)
    assert b"\x83" in blob or b"\x82" in blob  # EXT opcodes, not GLOBAL
    copyreg.add_extension("posix", "system", 0x7E57)
    try:
        with pytest.raises(CheckpointError, match="refused"):
            parse_checkpoint(_wrapped(blob))
    finally:
        copyreg.remove_extension("posix", "system", 0x7E57)
    assert not canary.exists()


@pytest.mark.parametrize("module,name", [
    ("collections", "namedtuple"), ("torch._utils", "_rebuild_qtensor"), ("torch", "load"),
    ("torch.nn.modules.linear", "Linear"), ("numpy.core.multiarray", "_reconstruct"), ("builtins", "getattr"),
])
def test_globals_next_to_the_allowed_ones_are_refused(module, name):
    main = b"\x80\x02" + lt.op_global(module, name) + b")R."
    with pytest.raises(CheckpointError, match=f"{module}.{name}"):
        parse_checkpoint(_wrapped(main))


def test_a_storage_type_cannot_be_called():
    main = b"\x80\x02" + lt.op_global("torch", "FloatStorage") + lt.op_tuple(lt.op_int(10)) + b"R."
    with pytest.raises(CheckpointError, match="calls torch.FloatStorage"):
        parse_checkpoint(_wrapped(main))


def test_a_checked_tensor_cannot_be_rewritten_by_build():
    data = np.arange(4, dtype=np.float32)
    tensor = lt.op_tensor(lt.Entry("s", 0, (4,), (1,)), "FloatStorage", 4)
    state = b"}" + lt.op_str("offset") + lt.op_int(10**9) + b"s"  # {"offset": 1e9}
    main = b"\x80\x02" + lt.op_empty_ordered_dict() + lt.op_str("t") + tensor + state + b"b" + b"s."
    with pytest.raises(CheckpointError, match="modify a tensor"):
        parse_checkpoint(lt.checkpoint_bytes({}, {"s": data}, main=main))


# --------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("entry,why", [
    (lt.Entry("s", 8, (3,), (1,)), "reaches element 10"),
    (lt.Entry("s", 0, (2, 6), (6, 1)), "reaches element 11"),
    (lt.Entry("s", 0, (4,), (4,)), "reaches element 12"),
    (lt.Entry("s", -1, (2,), (1,)), "negative"),
    (lt.Entry("s", 0, (2, 2), (-1, 1)), "negative"),
    (lt.Entry("s", 0, (-2,), (1,)), "negative"),
    (lt.Entry("s", 0, (2, 2), (1,)), "2 sizes but 1 strides"),
    (lt.Entry("s", 0, (2**62, 2**62), (1, 1)), "reaches element"),
])
def test_views_outside_their_storage_are_refused(entry, why):
    with pytest.raises(CheckpointError, match=why):
        parse_checkpoint(lt.checkpoint_bytes({"t": entry}, {"s": np.zeros(10, np.float32)}))


def test_declared_and_stored_element_counts_must_agree():
    blob = lt.checkpoint_bytes({"t": lt.Entry("s", 0, (4,), (1,))}, {"s": np.zeros(10, np.float32)}, declared={"s": 12})
    with pytest.raises(CheckpointError, match="holds 10 elements but the pickle declares 12"):
        parse_checkpoint(blob)


def test_a_huge_declared_storage_is_refused_before_allocation():
    entries = {"t": lt.Entry("s", 0, (4,), (1,))}
    storages = {"s": np.zeros(4, np.float32)}
    main = lt.main_pickle(entries, storages, declared={"s": 2**40})
    blob = lt.checkpoint_bytes(entries, storages, main=main)
    blob = blob.replace(np.int64(4).tobytes(), np.int64(2**40).tobytes(), 1)
    with _peak_memory() as peak:
        with pytest.raises(CheckpointError, match="truncated"):
            parse_checkpoint(blob)
    assert peak() < 8 << 20  # refused from the declared size: 8 TiB never allocated


@pytest.mark.parametrize("cut", [10, 100, -1, -17])
def test_truncated_files_are_refused(cut):
    blob = lt.simple_checkpoint({"a": np.ones((3, 3), np.float32), "b": np.ones(5, np.int64)})
    with pytest.raises(CheckpointError):
        parse_checkpoint(blob[:cut])


def test_trailing_bytes_and_storage_lists_that_do_not_match_are_refused():
    entries = {"t": lt.Entry("s", 0, (4,), (1,))}
    storages = {"s": np.zeros(4, np.float32)}
    with pytest.raises(CheckpointError, match="unexpected bytes"):
        parse_checkpoint(lt.checkpoint_bytes(entries, storages, trailer=b"\0"))
    with pytest.raises(CheckpointError, match="storage list"):
        parse_checkpoint(lt.checkpoint_bytes(entries, {"s": storages["s"], "x": storages["s"]}))


@pytest.mark.parametrize("blob,why", [
    (b"PK\x03\x04" + b"\0" * 40, "not a readable"),
    (pickle.dumps(12345, protocol=2), "magic number"),
    (b"", "not a readable"),
    (b"hello world", "not a readable"),
    (pickle.dumps(lt.MAGIC_NUMBER, protocol=2) + pickle.dumps(7, protocol=2), "protocol version"),
])
def test_other_files_are_refused(blob, why):
    with pytest.raises(CheckpointError, match=why):
        parse_checkpoint(blob)


def test_the_state_must_be_a_mapping_of_names_to_tensors():
    with pytest.raises(CheckpointError, match="not a state dict"):
        parse_checkpoint(_wrapped(pickle.dumps([1, 2], protocol=2)))
    with pytest.raises(CheckpointError, match="not a named tensor"):
        parse_checkpoint(_wrapped(pickle.dumps({"a": 1}, protocol=2)))


def test_load_state_dict_names_the_file(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as info:
        load_state_dict(str(path))
    assert info.value.subject == str(path)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state_dict(str(tmp_path / "missing.pth"))


# --------------------------------------------------------------------------- a sandbox in memory and time
def _nested(depth: int) -> bytes:
    """A state pickle whose dict has, as a key, None wrapped in ``depth`` one-element tuples."""
    return b"\x80\x02}" + b"N" + b"\x85" * depth + b"N" + b"s."


def test_a_tuple_nested_200000_deep_is_refused_before_it_is_hashed(tmp_path):
    """Hashing it (as a dict key) would overflow the C stack: the process died of SIGSEGV, exit 139."""
    weights = tmp_path / "crash.pt"
    weights.write_bytes(_wrapped(_nested(200_000)))
    proc = convcli_process("classify", EXAMPLES / "photo.jpg", env=dict(os.environ, CONVCLI_WEIGHTS=str(weights),
                                                                   XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.decode().splitlines() == [
        f"convcli: error: {weights}: nests containers more than {MAX_DEPTH} deep; a state dict nests 4"]


def test_nesting_is_bounded_however_the_containers_are_made():
    deep_list = b"\x80\x02" + b"]" * (MAX_DEPTH + 2) + b"a" * (MAX_DEPTH + 1) + b"."  # each into the one before
    deep_marked = b"\x80\x02" + b"(" * (MAX_DEPTH + 1) + b"N" + b"t" * (MAX_DEPTH + 1) + b"."
    for main in (deep_list, deep_marked, _nested(MAX_DEPTH + 1)):
        with pytest.raises(CheckpointError, match="nests containers more than"):
            parse_checkpoint(_wrapped(main))
    with pytest.raises(CheckpointError, match="not a state dict"):  # just deep enough is only a wrong state
        parse_checkpoint(_wrapped(b"\x80\x02N" + b"\x85" * MAX_DEPTH + b"."))


@pytest.mark.parametrize("key", [b"N\x85", b"N\x85\x85", b"]"])
def test_dict_keys_are_names_or_numbers(key):
    with pytest.raises(CheckpointError, match="a dict key is a"):
        parse_checkpoint(_wrapped(b"\x80\x02}" + key + b"Ns."))  # (None,) / ((None,),) / [] as a key
    pairs = b"\x80\x02" + lt.op_global("collections", "OrderedDict") + b"]" + key + b"N\x86a\x85R."
    with pytest.raises(CheckpointError, match="a dict key is a"):
        parse_checkpoint(_wrapped(pairs))  # OrderedDict([(key, None)])


def test_stack_global_names_must_be_text():
    main = b"\x80\x04" + b"N\x85" + lt.op_str("OrderedDict") + b"\x93)R."
    with pytest.raises(CheckpointError, match="other than text"):
        parse_checkpoint(_wrapped(main))


SHARED = {
    # what BUILD would set: (global, state)
    "a storage type's element type": (lt.op_global("torch", "FloatStorage"),
                                       b"N}" + lt.op_str("dtype") + lt.op_str("junk") + b"s\x86"),
    "a rebuild function's defaults": (lt.op_global("torch._utils", "_rebuild_parameter"),
                                      b"N}" + lt.op_str("__defaults__") + b"N\x85s\x86"),
    "the rebuild function's attributes": (lt.op_global("torch._utils", "_rebuild_tensor_v2"),
                                          b"}" + lt.op_str("x") + b"Ns"),
    "the OrderedDict class": (lt.op_global("collections", "OrderedDict"), b"}" + lt.op_str("x") + b"Ns"),
}


@pytest.mark.parametrize("what", SHARED)
def test_build_never_changes_what_the_next_load_shares(what):
    """Setting attributes of a global would change the loader for the rest of the process."""
    target, state = SHARED[what]
    quiet = b"\x80\x02" + target + state + b"b0}."  # then an empty, otherwise valid state dict
    with pytest.raises(CheckpointError, match="tries to modify"):
        parse_checkpoint(_wrapped(quiet))
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(5, np.int64)}
    for blob in (lt.simple_checkpoint(arrays), lt.zip_checkpoint({"w": lt.Entry("s", 0, (2, 3), (3, 1))},
                                                                 {"s": arrays["w"].ravel()})):
        state = parse_checkpoint(blob)  # the next valid checkpoint loads as before
        np.testing.assert_array_equal(state["w"], arrays["w"])
        assert state["w"].dtype == np.float32


def test_a_state_dicts_metadata_is_accepted_and_dropped():
    """torch.save keeps OrderedDict._metadata as the dict's attributes (a BUILD on the dict itself)."""
    tensor = lt.op_tensor(lt.Entry("s", 0, (3,), (1,)), "FloatStorage", 3)
    meta = b"}" + lt.op_str("_metadata") + lt.op_empty_ordered_dict() + lt.op_str("") + b"}" + lt.op_str(
        "version") + lt.op_int(1) + b"ss" + b"s"
    main = b"\x80\x02" + lt.op_empty_ordered_dict() + lt.op_str("w") + tensor + b"s" + meta + b"b."
    state = parse_checkpoint(lt.checkpoint_bytes({}, {"s": np.ones(3, np.float32)}, main=main))
    assert list(state) == ["w"] and not hasattr(state, "_metadata")


def test_a_memo_index_beyond_the_pickle_costs_nothing():
    """pickle's own unpickler sizes its memo by the largest index: 11 bytes made it allocate 1 GiB."""
    blob = b"\x80\x02N" + b"r" + (1 << 26).to_bytes(4, "little") + b"0N."
    with _peak_memory() as peak:
        with pytest.raises(CheckpointError, match="memo index 67,108,864"):
            parse_checkpoint(blob)
    assert peak() < 1 << 20


def test_a_zero_stride_view_is_not_materialised_beyond_the_files_size():
    """torch.zeros(1).expand(16384, 16384), saved: 340 bytes that would become 1 GiB."""
    blob = lt.checkpoint_bytes({"t": lt.Entry("s", 0, (16384, 16384), (0, 0))}, {"s": np.zeros(1, np.float32)})
    with _peak_memory() as peak:
        with pytest.raises(CheckpointError, match=f"more than the file's {len(blob)} bytes"):
            parse_checkpoint(blob)
    assert peak() < 1 << 20
    many = {f"t{i}": lt.Entry("s", 0, (64,), (1,)) for i in range(4)}  # four names for one view: one array
    state = parse_checkpoint(lt.checkpoint_bytes(many, {"s": np.arange(64, dtype=np.float32)}))
    assert len({id(a) for a in state.values()}) == 1
    np.testing.assert_array_equal(state["t3"], np.arange(64))
    shifted = {f"t{i}": lt.Entry("s", i, (4000,), (1,)) for i in range(64)}  # 64 overlapping views
    with pytest.raises(CheckpointError, match="more than the file's"):
        parse_checkpoint(lt.checkpoint_bytes(shifted, {"s": np.arange(4096, dtype=np.float32)}))


def test_a_pickle_longer_than_a_state_dicts_is_refused_in_bounded_time_and_memory(monkeypatch):
    from convcli.nn import pickle_loader

    limit = 64 << 10  # the loader's 1 MiB, scaled down: the memory it may cost is proportional
    monkeypatch.setattr(pickle_loader, "MAX_PICKLE_BYTES", limit)
    blob = b"\x80\x02N" + b"\x94" * (limit + 10)  # memoise the same None, over and over
    with _peak_memory() as peak:
        with pytest.raises(CheckpointError, match="pickles take more than 65,536 bytes"):
            parse_checkpoint(blob)
    assert peak() < 16 * limit
    assert MAX_PICKLE_BYTES <= 1 << 20  # so a refusal takes well under a second
    with pytest.raises(CheckpointError, match="integer of 1,000 bytes"):
        parse_checkpoint(b"\x80\x02\x8b" + (1000).to_bytes(4, "little") + b"\x01" * 1000 + b".")


@pytest.mark.parametrize("opcode", [b"I", b"L", b"F", b"S", b"V", b"p", b"g", b"P", b"\x8f", b"\x90", b"\x91"])
def test_opcodes_torch_never_writes_are_refused(opcode):
    with pytest.raises(CheckpointError, match="never writes"):
        parse_checkpoint(b"\x80\x02" + opcode + b"1\n.")


# --------------------------------------------------------------------------- mutation fuzz
def _outcome(mutant: bytes) -> str:
    """Parse one mutant: only the loader's own error may come out, none hangs, none takes memory."""
    start = time.perf_counter()
    with _peak_memory() as peak:
        try:
            parse_checkpoint(mutant)
            outcome = "ok"
        except CheckpointError:
            outcome = "refused"
    assert time.perf_counter() - start < 5.0
    # Far more than any of these small files can hold: one mutant of pickle's own loader took 1.9 GB.
    assert peak() < 4 * len(mutant) + (8 << 20), f"{peak():,} bytes for a {len(mutant):,}-byte mutant"
    return outcome


def _refused_or_parsed(mutants) -> int:
    return sum(1 for mutant in mutants if _outcome(mutant))


def _mutants(blob: bytes, count: int, seed: int, region: int | None = None):
    rng = random.Random(seed)
    top = region or len(blob)
    for _ in range(count):
        b = bytearray(blob)
        kind = rng.randrange(4)
        i = rng.randrange(top)
        if kind == 0:
            b[i] = rng.randrange(256)
        elif kind == 1:
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 2:
            del b[i:i + rng.randrange(1, 16)]
        else:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        yield bytes(b)


def test_mutants_of_a_small_checkpoint_only_raise_the_loaders_error():
    blob = lt.checkpoint_bytes(
        {"a": lt.Entry("s", 0, (2, 3), (3, 1)), "b": lt.Entry("s", 1, (2,), (2,)), "n": lt.Entry("n", 0, (), ())},
        {"s": np.arange(6, dtype=np.float32), "n": np.array([7], np.int64)},
    )
    outcomes = {"ok": 0, "refused": 0}
    for mutant in _mutants(blob, 400, seed=1):
        outcomes[_outcome(mutant)] += 1
    assert outcomes["refused"] > 300
    zipped = lt.zip_checkpoint({"a": lt.Entry("s", 0, (2, 3), (3, 1))}, {"s": np.arange(6, dtype=np.float32)})
    assert _refused_or_parsed(_mutants(zipped, 200, seed=3)) == 200


def test_mutants_of_the_published_checkpoint_header_only_raise_the_loaders_error():
    blob = Path(source_path()).read_bytes()
    # the pickles end at byte 47 176
    assert _refused_or_parsed(_mutants(blob, 12, seed=2, region=42_000)) == 12


def test_loading_never_imports_torch():
    code = "import sys; from convcli.nn.pickle_loader import load_state_dict; from convcli.nn.weights import source_path; " \
           "load_state_dict(source_path()); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
