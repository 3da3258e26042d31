"""Read a PyTorch checkpoint into numpy arrays, without torch and without running its code.

A legacy (non-zip, torch < 1.6) ``torch.save`` file is five pickles and the
raw storages, one after the other::

    magic number | protocol version | system info | the object | storage keys
    then, for every key in that order: int64 element count, element bytes

The zip format of later versions holds the object's pickle as
``<name>/data.pkl`` and each storage as the member ``<name>/data/<key>``;
members are only ever read by those exact names, never extracted.

A pickle is a program for a small stack machine, and ``pickle.load`` runs it
with the power to import and call anything, so a file from elsewhere runs
whatever it says.  Checkpoints here run on a machine of this module's own
(:class:`_Machine`), which knows only the opcodes ``torch.save`` writes and
resolves only the handful of globals a state dict needs (an ordered dict,
the tensor-rebuild functions, the storage types), each to a function of ours
that builds plain data; everything else is refused before it happens.  The
machine is a sandbox in memory and time too:

- every opcode reads only bytes that are there, and the pickles of one
  checkpoint take at most :data:`MAX_PICKLE_BYTES`, so a load ends quickly;
- memo indices must lie within the pickle's length, so a few bytes cannot
  ask for a table of gigabytes;
- containers nest at most :data:`MAX_DEPTH` deep (checked as each is made or
  grows) and dict keys are names or numbers, so nothing deep is ever hashed
  (hashing a tuple nested 200,000 deep overflows the C stack);
- BUILD, which sets attributes, is honoured only on an ordered dict this load
  made, and only to drop it (a state dict's ``_metadata``): a refused file
  cannot change the objects the next load shares with it;
- tensors are first recorded as (storage, offset, shape, stride) and become
  arrays once every bound has been checked against the bytes actually
  present; identical views (tied weights) become one array, and all arrays
  together may take no more bytes than the file (a view with a zero stride,
  as torch's ``expand`` makes, can repeat one element a billion times).
"""
from __future__ import annotations

import collections
import io
import math
import os
import struct
import zipfile
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
MAX_CHECKPOINT_BYTES = 1 << 30  # a state dict of a small CNN is tens of MB
MAX_PICKLE_BYTES = 1 << 20  # Lite0's pickles take 47 kB, about 160 bytes a tensor
MAX_DEPTH = 32  # a state dict nests 4 deep: the dict, a tensor's arguments, its storage reference
MAX_INT_BYTES = 16  # the magic number takes 10; sizes, strides and counts fit in 8
MAX_NAME_BYTES = 256  # of a GLOBAL's module or name

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


@dataclass(frozen=True, slots=True)
class _StorageType:
    """What a storage class such as ``torch.FloatStorage`` resolves to: only its element type (immutable)."""

    name: str
    dtype: np.dtype


class _Storage:
    """One storage named by a persistent id: element type and count; bytes arrive later."""

    __slots__ = ("key", "dtype", "numel", "data")

    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor as the pickle describes it; it becomes an array once the storages are read."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride


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
    """Stand-in for ``collections.OrderedDict``: only ever an empty dict or one built from (name, value) pairs."""
    if len(args) > 1:
        raise CheckpointError("OrderedDict is called with more than one argument")
    pairs = args[0] if args else ()
    if not isinstance(pairs, (list, tuple)) or not all(type(p) is tuple and len(p) == 2 for p in pairs):
        raise CheckpointError("OrderedDict is called with something other than (key, value) pairs")
    for key, _ in pairs:
        _check_key(key)
    return collections.OrderedDict(pairs)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED_GLOBALS.update(
    {("torch", name): _StorageType(name, np.dtype("<" + code)) for name, code in STORAGE_DTYPES.items()}
)
_FUNCTIONS = (_ordered_dict, _rebuild_tensor, _rebuild_parameter)
_KEY_TYPES = (str, int, bytes)  # hashing these costs their length, never a recursion


def _check_key(key) -> None:
    if type(key) not in _KEY_TYPES:
        raise CheckpointError(f"a dict key is a {type(key).__name__}; a state dict's keys are names")


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


_EMPTY = object()  # a memo slot no PUT filled


class _Machine:
    """Run one pickle from ``data[start:]``: a stack machine that knows only a checkpoint's opcodes.

    ``stop`` ends the bytes the pickle may take; ``storages`` collects the
    storages its persistent ids name (None: this pickle may name none).
    :meth:`run` returns the pickled object and where the pickle ended.
    """

    def __init__(self, data: bytes, start: int, stop: int, storages: dict[str, _Storage] | None) -> None:
        self.data = data
        self.pos = start
        self.stop = stop
        self.storages = storages
        self.memo_size = stop - start  # a memo index takes bytes too: none reaches the pickle's length
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: list = []  # by index; a gap holds _EMPTY
        # Nesting depth of every container the pickle made (by id; ``made`` keeps them alive, so
        # an id is never reused within the load).
        self.depths: dict[int, int] = {}
        self.made: list = []

    def run(self):
        data, table = self.data, _OPCODES
        while True:
            if self.pos >= self.stop:
                self._short()
            code = data[self.pos]
            self.pos += 1
            op = table[code]
            if op is None:
                raise CheckpointError(_unknown_opcode(code))
            if op(self):
                return self.stack.pop(), self.pos

    # --------------------------------------------------------------- reading
    def _short(self):
        if self.stop < len(self.data):
            raise CheckpointError(
                f"its pickles take more than {MAX_PICKLE_BYTES:,} bytes; a state dict's take about 160 a tensor")
        raise CheckpointError("is not a readable PyTorch checkpoint (it ends inside a pickle)")

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > self.stop:
            self._short()
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, fmt: struct.Struct):
        end = self.pos + fmt.size
        if end > self.stop:
            self._short()
        (value,) = fmt.unpack_from(self.data, self.pos)
        self.pos = end
        return value

    def line(self) -> str:
        end = self.data.find(b"\n", self.pos, min(self.stop, self.pos + MAX_NAME_BYTES + 1))
        if end < 0:
            raise CheckpointError("is not a readable PyTorch checkpoint (a global's name is not a short line of text)")
        text = self.data[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return text

    # --------------------------------------------------------------- the stack
    def push(self, value) -> None:
        self.stack.append(value)

    def floor(self) -> int:
        return self.marks[-1] if self.marks else 0

    def pop(self):
        if len(self.stack) <= self.floor():
            raise CheckpointError("is not a readable PyTorch checkpoint (a pickle takes more than its stack holds)")
        return self.stack.pop()

    def top(self):
        if len(self.stack) <= self.floor():
            raise CheckpointError("is not a readable PyTorch checkpoint (a pickle takes more than its stack holds)")
        return self.stack[-1]

    def pop_mark(self) -> list:
        if not self.marks:
            raise CheckpointError("is not a readable PyTorch checkpoint (a pickle closes a container it never opened)")
        at = self.marks.pop()
        items = self.stack[at:]
        del self.stack[at:]
        return items

    def pop_items(self, n: int) -> list:
        if len(self.stack) - n < self.floor():
            raise CheckpointError("is not a readable PyTorch checkpoint (a pickle takes more than its stack holds)")
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    # --------------------------------------------------------------- containers
    def depth_of(self, value) -> int:
        return self.depths.get(id(value), 0)

    def made_container(self, container, items):
        """Record a new container holding ``items`` and push it, refusing one nested too deeply."""
        depth = 1 + max(map(self.depth_of, items), default=0)
        if depth > MAX_DEPTH:
            raise CheckpointError(f"nests containers more than {MAX_DEPTH} deep; a state dict nests 4")
        self.depths[id(container)] = depth
        self.made.append(container)
        self.push(container)

    def grown(self, container, items) -> None:
        """``container`` now also holds ``items``: its depth may grow."""
        depth = max(self.depth_of(container), 1 + max(map(self.depth_of, items), default=0))
        if depth > MAX_DEPTH:
            raise CheckpointError(f"nests containers more than {MAX_DEPTH} deep; a state dict nests 4")
        self.depths[id(container)] = depth

    def target(self, kind: type, what: str):
        container = self.top()
        if type(container) not in (kind, collections.OrderedDict) or id(container) not in self.depths:
            raise CheckpointError(f"the pickle {what} something that is not a {kind.__name__} it made")
        return container

    def set_items(self, items: list) -> None:
        if len(items) % 2:
            raise CheckpointError("is not a readable PyTorch checkpoint (a dict's items do not pair up)")
        target = self.target(dict, "sets items of")
        for key in items[::2]:
            _check_key(key)
        self.grown(target, items)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def append_items(self, items: list) -> None:
        target = self.top()
        if type(target) is not list or id(target) not in self.depths:
            raise CheckpointError("the pickle appends to something that is not a list it made")
        self.grown(target, items)
        target.extend(items)

    # --------------------------------------------------------------- the memo
    def put(self, index: int) -> None:
        if index >= self.memo_size:
            raise CheckpointError(
                f"uses memo index {index:,}, beyond what a pickle of {self.memo_size:,} bytes can fill")
        if index >= len(self.memo):
            self.memo.extend([_EMPTY] * (index + 1 - len(self.memo)))
        self.memo[index] = self.top()

    def get(self, index: int) -> None:
        value = self.memo[index] if index < len(self.memo) else _EMPTY
        if value is _EMPTY:
            raise CheckpointError(f"is not a readable PyTorch checkpoint (memo index {index} is empty)")
        self.push(value)

    # --------------------------------------------------------------- globals, calls, storages
    def find_class(self, module, name):
        if type(module) is not str or type(name) is not str:
            raise CheckpointError("names a global by something other than text")
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise CheckpointError(
                f"refused to load {module}.{name}: a model file may only hold tensors, and this one names "
                "other code (a possibly malicious pickle)"
            )
        self.push(found)

    def reduce(self) -> None:
        args = self.pop()
        func = self.pop()
        if isinstance(func, _StorageType):
            raise CheckpointError(f"the pickle calls torch.{func.name} directly; a state dict never does")
        if not any(func is f for f in _FUNCTIONS):
            raise CheckpointError("the pickle calls something that is not a function of a state dict")
        if type(args) is not tuple:
            raise CheckpointError("the pickle calls a function with arguments that are not a tuple")
        result = func(*args)
        if type(result) is collections.OrderedDict:
            self.made_container(result, [*result.keys(), *result.values()])
        else:
            self.push(result)

    def build(self) -> None:
        state = self.pop()
        inst = self.top()
        if type(inst) is collections.OrderedDict and id(inst) in self.depths:
            # torch.save keeps a state dict's _metadata (layer versions) as its attributes: unused here.
            if type(state) is tuple and len(state) == 2:
                state = state[0] if state[1] is None else None
            if type(state) is not dict:
                raise CheckpointError("the pickle sets a state dict's attributes with something other than a dict")
            return
        if isinstance(inst, _TensorRef):
            what = "a tensor"
        elif isinstance(inst, _StorageType):
            what = f"torch.{inst.name}"
        elif isinstance(inst, _Storage):
            what = "a storage"
        else:
            what = f"a {type(inst).__name__}"
        raise CheckpointError(f"the pickle tries to modify {what}; a checkpoint only sets a state dict's attributes")

    def persistent_load(self, pid):
        if self.storages is None:
            raise CheckpointError("a header pickle refers to a storage")
        # Legacy files name a storage with 6 fields (the last a view, always None
        # since torch 0.4); zip files with 5.
        if type(pid) is not tuple or len(pid) not in (5, 6) or pid[0] not in ("storage", b"storage"):
            raise CheckpointError("a persistent id is not a storage reference")
        storage_type, key, _location, numel = pid[1:5]
        if len(pid) == 6 and pid[5] is not None:
            raise CheckpointError("storage views (from torch < 0.4) are not supported")
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError("a storage reference names an unknown storage type")
        if type(key) is not str or type(numel) is not int or numel < 0:
            raise CheckpointError("a storage reference has a bad key or element count")
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        elif known.dtype != storage_type.dtype or known.numel != numel:
            raise CheckpointError(f"storage {key} is declared twice with different types or sizes")
        return known


_U8, _U16, _I32, _U32, _U64, _F64 = (struct.Struct(f) for f in ("<B", "<H", "<i", "<I", "<Q", ">d"))


def _proto(m: _Machine):
    version = m.unpack(_U8)
    if version > 5:
        raise CheckpointError(f"is not a readable PyTorch checkpoint (pickle protocol {version})")


def _long(m: _Machine, size: int):
    if size > MAX_INT_BYTES:
        raise CheckpointError(f"holds an integer of {size:,} bytes; a checkpoint's take at most {MAX_INT_BYTES}")
    m.push(int.from_bytes(m.take(size), "little", signed=True))


def _text(m: _Machine, size: int):
    m.push(m.take(size).decode("utf-8", "surrogatepass"))


def _stop(m: _Machine):
    m.top()
    return True


def _pop(m: _Machine):
    if m.marks and m.marks[-1] == len(m.stack):
        m.marks.pop()  # as pickle does: POP right after MARK discards the mark
    else:
        m.pop()


def _refused(m: _Machine, what: str):
    raise CheckpointError(
        f"refused to load {what}: a model file may only hold tensors, and this one names other code "
        "(a possibly malicious pickle)")


def _opcodes() -> list:
    table: list = [None] * 256
    ops = {
        b"\x80": _proto,
        b"\x95": lambda m: m.take(8),  # FRAME: a length for buffering, nothing to do
        b".": _stop,
        b"(": lambda m: m.marks.append(len(m.stack)),
        b"0": _pop,
        b"1": lambda m: m.pop_mark(),
        b"2": lambda m: m.push(m.top()),
        b"N": lambda m: m.push(None),
        b"\x88": lambda m: m.push(True),
        b"\x89": lambda m: m.push(False),
        b"J": lambda m: m.push(m.unpack(_I32)),
        b"K": lambda m: m.push(m.unpack(_U8)),
        b"M": lambda m: m.push(m.unpack(_U16)),
        b"\x8a": lambda m: _long(m, m.unpack(_U8)),
        b"\x8b": lambda m: _long(m, m.unpack(_I32)),
        b"G": lambda m: m.push(m.unpack(_F64)),
        # Python 2's str: text, as torch reads it (encoding="utf-8").
        b"U": lambda m: _text(m, m.unpack(_U8)),
        b"T": lambda m: _text(m, m.unpack(_I32)),
        b"\x8c": lambda m: _text(m, m.unpack(_U8)),
        b"X": lambda m: _text(m, m.unpack(_U32)),
        b"\x8d": lambda m: _text(m, m.unpack(_U64)),
        b"C": lambda m: m.push(m.take(m.unpack(_U8))),
        b"B": lambda m: m.push(m.take(m.unpack(_U32))),
        b"\x8e": lambda m: m.push(m.take(m.unpack(_U64))),
        b")": lambda m: m.push(()),
        b"t": lambda m: _tuple(m, m.pop_mark()),
        b"\x85": lambda m: _tuple(m, m.pop_items(1)),
        b"\x86": lambda m: _tuple(m, m.pop_items(2)),
        b"\x87": lambda m: _tuple(m, m.pop_items(3)),
        b"]": lambda m: m.made_container([], ()),
        b"l": lambda m: _list(m, m.pop_mark()),
        b"a": lambda m: m.append_items([m.pop()]),
        b"e": lambda m: m.append_items(m.pop_mark()),
        b"}": lambda m: m.made_container({}, ()),
        b"d": lambda m: _dict(m, m.pop_mark()),
        b"s": lambda m: m.set_items(m.pop_items(2)),
        b"u": lambda m: m.set_items(m.pop_mark()),
        b"c": lambda m: m.find_class(m.line(), m.line()),
        b"\x93": _stack_global,
        b"R": lambda m: m.reduce(),
        b"b": lambda m: m.build(),
        b"Q": lambda m: m.push(m.persistent_load(m.pop())),
        b"q": lambda m: m.put(m.unpack(_U8)),
        b"r": lambda m: m.put(m.unpack(_U32)),
        b"\x94": lambda m: m.put(len(m.memo)),
        b"h": lambda m: m.get(m.unpack(_U8)),
        b"j": lambda m: m.get(m.unpack(_U32)),
        # Opcodes that name or call code in other ways than a GLOBAL a checkpoint needs.
        b"\x82": lambda m: _refused(m, f"extension code {m.unpack(_U8)}"),
        b"\x83": lambda m: _refused(m, f"extension code {m.unpack(_U16)}"),
        b"\x84": lambda m: _refused(m, f"extension code {m.unpack(_I32)}"),
        b"i": lambda m: _refused(m, "a class instance (INST)"),
        b"o": lambda m: _refused(m, "a class instance (OBJ)"),
        b"\x81": lambda m: _refused(m, "a class instance (NEWOBJ)"),
        b"\x92": lambda m: _refused(m, "a class instance (NEWOBJ_EX)"),
    }
    for code, op in ops.items():
        table[code[0]] = op
    return table


def _tuple(m: _Machine, items: list) -> None:
    m.made_container(tuple(items), items)


def _list(m: _Machine, items: list) -> None:
    m.made_container(list(items), items)


def _stack_global(m: _Machine) -> None:
    name = m.pop()
    m.find_class(m.pop(), name)


def _dict(m: _Machine, items: list) -> None:
    if len(items) % 2:
        raise CheckpointError("is not a readable PyTorch checkpoint (a dict's items do not pair up)")
    for key in items[::2]:
        _check_key(key)
    m.made_container(dict(zip(items[::2], items[1::2])), items)


def _unknown_opcode(code: int) -> str:
    import pickletools

    op = pickletools.code2op.get(chr(code))
    name = f"opcode {op.name}" if op is not None else f"byte 0x{code:02x} as an opcode"
    return f"is not a readable PyTorch checkpoint (its pickle uses {name}, which torch.save never writes)"


_OPCODES = _opcodes()


def _load(data: bytes, start: int, storages: dict[str, _Storage] | None = None):
    """The object of the pickle at ``data[start:]`` and where it ends (within the first MAX_PICKLE_BYTES)."""
    return _Machine(data, start, min(len(data), MAX_PICKLE_BYTES), storages).run()


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
    blob = bytes(blob)
    try:
        if blob[:4] == b"PK\x03\x04":
            return _parse_zip(blob)
        return _parse(blob)
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError("the pickle asks for more memory than the machine has") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, struct.error,
            UnicodeDecodeError, zipfile.BadZipFile, NotImplementedError, EOFError) as exc:
        # A hostile or damaged file reaches a library's own checks; name it as ours.
        raise CheckpointError(f"is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def _parse_zip(blob: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError("is a zip file but not one PyTorch checkpoint (no single <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        # torch.save stores every member uncompressed; refusing compressed ones
        # bounds every read by the file's own size (no zip bombs).
        info = archive.getinfo(pickles[0])
        _stored(info)
        if info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"its pickle takes {info.file_size:,} bytes, more than {MAX_PICKLE_BYTES:,}; a state dict's "
                "takes about 160 a tensor")
        little = True
        if f"{prefix}byteorder" in archive.namelist():
            little = archive.read(f"{prefix}byteorder").strip() != b"big"
        storages: dict[str, _Storage] = {}
        state, _ = _load(archive.read(info), 0, storages)
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
    return _as_arrays(state, len(blob))


def _stored(info: zipfile.ZipInfo) -> None:
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(f"member {info.filename} is compressed; PyTorch stores checkpoint members as they are")


def _parse(blob: bytes) -> dict[str, np.ndarray]:
    magic, pos = _load(blob, 0)
    if magic != MAGIC_NUMBER:
        raise CheckpointError("is not a PyTorch checkpoint (wrong magic number)")
    version, pos = _load(blob, pos)
    if version != PROTOCOL_VERSION:
        raise CheckpointError("has an unknown PyTorch checkpoint protocol version")
    info, pos = _load(blob, pos)
    if type(info) is not dict or type(info.get("little_endian", True)) is not bool:
        raise CheckpointError("has a malformed system-information header")
    little = info.get("little_endian", True)
    storages: dict[str, _Storage] = {}
    state, pos = _load(blob, pos, storages)
    keys, pos = _load(blob, pos)
    if (type(keys) is not list or not all(type(k) is str for k in keys) or sorted(keys) != sorted(storages)
            or len(set(keys)) != len(keys)):
        raise CheckpointError("the storage list does not match the storages the tensors use")
    total = len(blob)
    for key in keys:
        storage = storages[key]
        if pos + 8 > total:
            raise CheckpointError(f"is truncated: storage {key} is missing")
        (count,) = struct.unpack_from("<q" if little else ">q", blob, pos)
        pos += 8
        if count != storage.numel:
            raise CheckpointError(f"storage {key} holds {count} elements but the pickle declares {storage.numel}")
        nbytes = count * storage.dtype.itemsize
        if pos + nbytes > total:
            raise CheckpointError(f"is truncated: storage {key} needs {nbytes:,} bytes, {total - pos:,} remain")
        dtype = storage.dtype if little else storage.dtype.newbyteorder(">")
        storage.data = np.frombuffer(blob, dtype=dtype, count=count, offset=pos)
        pos += nbytes
    if pos != total:
        raise CheckpointError(f"has {total - pos:,} unexpected bytes after the last storage")
    return _as_arrays(state, total)


def _as_arrays(state, file_bytes: int) -> dict[str, np.ndarray]:
    """Every named tensor as an array of its own; identical views share one, and all fit in the file's size."""
    if not isinstance(state, dict):
        raise CheckpointError(f"holds a {type(state).__name__}, not a state dict of named tensors")
    arrays, views, total = {}, {}, 0
    for name, ref in state.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise CheckpointError(f"entry {name!r} is not a named tensor")
        view = (ref.storage.key, ref.offset, ref.shape, ref.stride)
        if view not in views:
            total += math.prod(ref.shape) * ref.storage.dtype.itemsize
            if total > file_bytes:
                raise CheckpointError(
                    f"its tensors would take more than the file's {file_bytes:,} bytes (views whose strides "
                    "repeat the same elements)")
            views[view] = _materialise(ref)
        arrays[name] = views[view]  # tied weights: one array, as torch keeps one tensor
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
