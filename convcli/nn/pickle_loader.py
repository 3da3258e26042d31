"""Read a PyTorch checkpoint into numpy arrays, without torch and without running its code.

A legacy (non-zip, torch < 1.6) ``torch.save`` file is five pickles and the
raw storages, one after the other::

    magic number | protocol version | system info | the object | storage keys
    then, for every key in that order: int64 element count, element bytes

The zip format of later versions holds the object's pickle as
``<name>/data.pkl`` and each storage as the member ``<name>/data/<key>``;
members are only ever read by those exact names, never extracted.

A pickle can name any importable callable and call it, so ``pickle.load`` on a
file from elsewhere runs whatever the file says.  :class:`_RestrictedUnpickler`
resolves only the handful of globals a state dict needs (an ordered dict, the
tensor-rebuild functions, the storage types), each to a function of ours that
builds plain data; every other global is refused before anything is called.
Tensors are first recorded as (storage, offset, shape, stride) and only become
arrays once every bound has been checked against the bytes actually present.
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile

import numpy as np

from ..errors import DataError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
MAX_CHECKPOINT_BYTES = 1 << 30  # a state dict of a small CNN is tens of MB

# Storage class name -> numpy element type, as torch lays the bytes out.
STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(DataError):
    """A model file that is not a readable PyTorch state dict, or that asks for code to run."""


class _StorageType:
    """What a storage class such as ``torch.FloatStorage`` resolves to: only its element type."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype

    def __call__(self, *args, **kwargs):
        raise CheckpointError(f"the pickle calls torch.{self.name} directly; a state dict never does")

    def __reduce__(self):
        raise TypeError("not picklable")


class _Storage:
    """One storage named by a persistent id: element type and count; bytes arrive later."""

    __slots__ = ("key", "dtype", "numel", "data")

    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None

    def __setstate__(self, state):
        # BUILD on our objects would let a pickle rewrite a checked bound.
        raise CheckpointError("the pickle tries to modify a storage")


class _TensorRef:
    """A tensor as the pickle describes it; it becomes an array once the storages are read."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride

    def __setstate__(self, state):
        raise CheckpointError("the pickle tries to modify a tensor")


def _int_tuple(value, what: str) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)) and all(type(v) is int for v in value):
        return tuple(value)
    if isinstance(value, (list, tuple)):
        # torch.Size pickles as a plain tuple; anything else here is not a tensor's geometry.
        raise CheckpointError(f"a tensor {what} holds something other than integers")
    raise CheckpointError(f"a tensor {what} is not a tuple of integers")


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """Stand-in for ``torch._utils._rebuild_tensor(_v2)``: record the view and check its bounds."""
    if not isinstance(storage, _Storage):
        raise CheckpointError("a tensor is built on something that is not a storage")
    if type(storage_offset) is not int:
        raise CheckpointError("a tensor's storage offset is not an integer")
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    ref = _TensorRef(storage, storage_offset, shape, strides)
    check_view(ref)
    return ref


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    if not isinstance(data, _TensorRef):
        raise CheckpointError("a parameter wraps something that is not a tensor")
    return data


def _ordered_dict(*args):
    """Stand-in for ``collections.OrderedDict``: only ever an empty dict or one built from pairs."""
    if len(args) > 1:
        raise CheckpointError("OrderedDict is called with more than one argument")
    return collections.OrderedDict(*args)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED_GLOBALS.update(
    {("torch", name): _StorageType(name, np.dtype("<" + code)) for name, code in STORAGE_DTYPES.items()}
)


def check_view(ref: _TensorRef) -> None:
    """Refuse a tensor whose offset, shape or strides reach outside its storage."""
    storage = ref.storage
    if len(ref.shape) != len(ref.stride):
        raise CheckpointError(f"a tensor has {len(ref.shape)} sizes but {len(ref.stride)} strides")
    if ref.offset < 0 or any(n < 0 for n in ref.shape) or any(s < 0 for s in ref.stride):
        raise CheckpointError("a tensor has a negative offset, size or stride")
    if math.prod(ref.shape) == 0:
        return
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
    if last >= storage.numel:
        raise CheckpointError(
            f"a tensor of shape {ref.shape} at offset {ref.offset} reaches element {last} of a storage "
            f"holding {storage.numel}"
        )


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :data:`_ALLOWED_GLOBALS`."""

    def __init__(self, file, storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        # None: this pickle must not reference storages at all.
        self._storages = storages

    def find_class(self, module: str, name: str):
        # Every GLOBAL, STACK_GLOBAL, INST, OBJ and EXT opcode comes through here.
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            pass
        raise CheckpointError(
            f"refused to load {module}.{name}: a model file may only hold tensors, and this one names "
            "other code (a possibly malicious pickle)"
        )

    def persistent_load(self, pid):
        if self._storages is None:
            raise CheckpointError("a header pickle refers to a storage")
        # Legacy files name a storage with 6 fields (the last a view, always None
        # since torch 0.4); zip files with 5.
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] not in ("storage", b"storage"):
            raise CheckpointError("a persistent id is not a storage reference")
        storage_type, key, _location, numel = pid[1:5]
        if len(pid) == 6 and pid[5] is not None:
            raise CheckpointError("storage views (from torch < 0.4) are not supported")
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError("a storage reference names an unknown storage type")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise CheckpointError("a storage reference has a bad key or element count")
        known = self._storages.get(key)
        if known is None:
            known = self._storages[key] = _Storage(key, storage_type.dtype, numel)
        elif known.dtype != storage_type.dtype or known.numel != numel:
            raise CheckpointError(f"storage {key} is declared twice with different types or sizes")
        return known


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict file (legacy or zip format) into a dict of name -> numpy array.

    Raises
    ------
    CheckpointError
        For anything but a well-formed checkpoint holding a flat mapping
        of names to tensors; the message says what is wrong.  No code named by
        the file is ever run.
    """
    try:
        size = os.path.getsize(path)
        if size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"is {size:,} bytes; a model file larger than {MAX_CHECKPOINT_BYTES:,} is refused")
        with open(path, "rb") as fh:
            blob = fh.read(MAX_CHECKPOINT_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read the model file: {exc.strerror or exc}", subject=str(path)) from None
    try:
        return parse_checkpoint(blob)
    except CheckpointError as exc:
        exc.subject = exc.subject or str(path)
        raise


def parse_checkpoint(blob: bytes) -> dict[str, np.ndarray]:
    """Parse the bytes of a checkpoint, legacy or zip (see :func:`load_state_dict`)."""
    try:
        if blob[:4] == b"PK\x03\x04":
            return _parse_zip(blob)
        return _parse(io.BytesIO(blob), len(blob))
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError("the pickle nests too deeply") from None
    except MemoryError:
        raise CheckpointError("the pickle asks for more memory than the machine has") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, struct.error, UnicodeDecodeError, zipfile.BadZipFile, NotImplementedError) as exc:
        # A hostile or damaged file reaches the unpickler's own checks; name it as ours.
        raise CheckpointError(f"is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def _parse_zip(blob: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError("is a zip file but not one PyTorch checkpoint (no single <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        # torch.save stores every member uncompressed; refusing compressed ones
        # bounds every read by the file's own size (no zip bombs).
        _stored(archive.getinfo(pickles[0]))
        little = True
        if f"{prefix}byteorder" in archive.namelist():
            little = archive.read(f"{prefix}byteorder").strip() != b"big"
        storages: dict[str, _Storage] = {}
        state = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
        for key, storage in storages.items():
            name = f"{prefix}data/{key}"
            try:
                info = archive.getinfo(name)
            except KeyError:
                raise CheckpointError(f"storage {key} is missing from the archive") from None
            _stored(info)
            nbytes = storage.numel * storage.dtype.itemsize
            if info.file_size != nbytes:
                raise CheckpointError(f"storage {key} holds {info.file_size:,} bytes, not the {nbytes:,} declared")
            data = archive.read(info)  # checks the CRC and the true size
            dtype = storage.dtype if little else storage.dtype.newbyteorder(">")
            storage.data = np.frombuffer(data, dtype=dtype, count=storage.numel)
    return _as_arrays(state)


def _stored(info: zipfile.ZipInfo) -> None:
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(f"member {info.filename} is compressed; PyTorch stores checkpoint members as they are")


def _parse(f: io.BytesIO, total: int) -> dict[str, np.ndarray]:
    if _RestrictedUnpickler(f).load() != MAGIC_NUMBER:
        raise CheckpointError("is not a PyTorch checkpoint (wrong magic number)")
    if _RestrictedUnpickler(f).load() != PROTOCOL_VERSION:
        raise CheckpointError("has an unknown PyTorch checkpoint protocol version")
    info = _RestrictedUnpickler(f).load()
    if not isinstance(info, dict):
        raise CheckpointError("has a malformed system-information header")
    little = info.get("little_endian", True)
    storages: dict[str, _Storage] = {}
    state = _RestrictedUnpickler(f, storages).load()
    keys = _RestrictedUnpickler(f).load()
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages) or len(set(keys)) != len(keys):
        raise CheckpointError("the storage list does not match the storages the tensors use")
    buf = f.getbuffer()
    pos = f.tell()
    for key in keys:
        storage = storages[key]
        if pos + 8 > total:
            raise CheckpointError(f"is truncated: storage {key} is missing")
        (count,) = struct.unpack("<q" if little else ">q", buf[pos:pos + 8])
        pos += 8
        if count != storage.numel:
            raise CheckpointError(f"storage {key} holds {count} elements but the pickle declares {storage.numel}")
        nbytes = count * storage.dtype.itemsize
        if pos + nbytes > total:
            raise CheckpointError(f"is truncated: storage {key} needs {nbytes:,} bytes, {total - pos:,} remain")
        dtype = storage.dtype if little else storage.dtype.newbyteorder(">")
        storage.data = np.frombuffer(buf, dtype=dtype, count=count, offset=pos)
        pos += nbytes
    if pos != total:
        raise CheckpointError(f"has {total - pos:,} unexpected bytes after the last storage")
    return _as_arrays(state)


def _as_arrays(state) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise CheckpointError(f"holds a {type(state).__name__}, not a state dict of named tensors")
    arrays = {}
    for name, ref in state.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise CheckpointError(f"entry {name!r} is not a named tensor")
        arrays[name] = _materialise(ref)
    return arrays


def _materialise(ref: _TensorRef) -> np.ndarray:
    check_view(ref)  # again: the storage is final now
    data = ref.storage.data
    if data is None or data.size != ref.storage.numel:
        raise CheckpointError(f"storage {ref.storage.key} has no data")
    if math.prod(ref.shape) == 0:
        return np.zeros(ref.shape, dtype=data.dtype.newbyteorder("="))
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset:], shape=ref.shape, strides=tuple(s * data.itemsize for s in ref.stride), writeable=False
    )
    # A copy in native byte order: the result owns its memory and the file's buffer can go.
    return np.array(view, dtype=data.dtype.newbyteorder("="), copy=True)
