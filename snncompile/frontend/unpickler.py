"""Our own unpickler for ``torch.save(model)`` files: it rebuilds tensors and modules and
calls nothing else.

``torch.load(weights_only=True)`` with an allow-list still lets REDUCE call any allowed
class with the file's arguments, and resolving a name imports its module first. Here
the pickle program is interpreted opcode by opcode (the subset protocol 2 uses, what
torch.save writes): names go through :mod:`snncompile.frontend.pickle_policy` before
any import; objects are created only the way torch.save writes them (``cls.__new__``
then state: NEWOBJ/BUILD); REDUCE calls only the fixed helpers below (tensor and
parameter rebuilds, OrderedDict, set, ...), each checking its arguments. Tensor sizes,
strides and offsets are checked against the storage the file really holds, and the
total against :data:`MAX_TENSOR_BYTES`, before anything is allocated.
"""
from __future__ import annotations

import inspect
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from snncompile.frontend import pickle_policy as policy

#: Logical bytes all tensors of one model file may span (a stride-0 weight can declare
#: terabytes over a few bytes of storage; the largest supported models are ~100 MB).
MAX_TENSOR_BYTES = 4 << 30


class RefusedFile(Exception):
    """The file asks for something a model file never needs (message says what)."""


@dataclass
class _Storage:
    key: str
    tensor: torch.Tensor   # 1-D, the storage's elements


def _ints(value, what: str) -> tuple:
    if not isinstance(value, tuple) or not all(type(v) is int for v in value):
        raise RefusedFile(f"tensor {what} {value!r} is not a tuple of integers")
    return value


class Unpickler:
    """Interprets one ``data.pkl``; ``storage(key, dtype, numel)`` returns a storage's elements."""

    def __init__(self, data: bytes, storage, max_bytes: int = MAX_TENSOR_BYTES):
        self.data, self.pos, self.storage = data, 0, storage
        self.max_bytes, self.tensor_bytes = max_bytes, 0
        self.memo: dict = {}
        self.stack: list = []
        self.metastack: list = []

    # -- reading --------------------------------------------------------------------
    def read(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RefusedFile("the pickle ends early")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def readline(self) -> str:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise RefusedFile("the pickle ends early")
        line = self.data[self.pos:end]
        self.pos = end + 1
        return line.decode("ascii")

    def pop_mark(self) -> list:
        items, self.stack = self.stack, self.metastack.pop()
        return items

    # -- the opcodes ------------------------------------------------------------------
    def load(self):
        ops = _OPS
        while True:
            code = self.read(1)
            op = ops.get(code)
            if op is None:
                raise RefusedFile(f"pickle opcode {code!r} is not one torch.save writes")
            if op is _STOP:
                if len(self.stack) != 1 or self.metastack:
                    raise RefusedFile("malformed pickle (stack not empty at STOP)")
                return self.stack.pop()
            op(self)

    def global_(self, module: str, name: str) -> None:
        try:
            obj = policy.resolve(module, name)
        except PermissionError as exc:
            raise RefusedFile(str(exc)) from None
        self.stack.append(getattr(self, obj) if isinstance(obj, str) else obj)

    def newobj(self, cls, args) -> object:
        if not isinstance(args, tuple):
            raise RefusedFile("NEWOBJ arguments are not a tuple")
        if not policy.allowed_class(cls) or issubclass(cls, torch.autograd.Function):
            raise RefusedFile(f"cannot create an object of {_name(cls)}")
        if issubclass(cls, tuple):
            return cls.__new__(cls, *args)   # a NamedTuple: its fields
        if args or cls.__new__ is not object.__new__ and cls.__new__ is not nn.Module.__new__:
            raise RefusedFile(f"{_name(cls)} is created with constructor arguments; torch.save never writes that")
        return object.__new__(cls)

    def build(self, inst, state) -> None:
        if type(inst) is OrderedDict:   # a state_dict keeps its version numbers in _metadata
            if not isinstance(state, dict) or set(state) - {"_metadata"}:
                raise RefusedFile("an OrderedDict with attributes other than _metadata")
            inst.__dict__.update(state)
            return
        if not isinstance(inst, nn.Module) or not isinstance(state, dict):
            raise RefusedFile(f"cannot set the state of a {type(inst).__name__}")
        for key in state:
            if not isinstance(key, str):
                raise RefusedFile(f"{_name(type(inst))} state has a non-string key {key!r}")
            if callable(getattr(type(inst), key, None)) and not isinstance(getattr(type(inst), key), type):
                raise RefusedFile(f"{_name(type(inst))} state replaces its method {key!r} "
                                  f"(that would change what forward computes)")
        inst.__setstate__(state)

    def reduce(self, func, args):
        if getattr(func, "__self__", None) is not self or func.__name__ not in _CALLABLE:
            raise RefusedFile(f"calling {_name(func)} while loading is not allowed")
        if not isinstance(args, tuple):
            raise RefusedFile("REDUCE arguments are not a tuple")
        return func(*args)

    # -- the only functions REDUCE may call --------------------------------------------
    def rebuild_tensor(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        if not isinstance(storage, _Storage):
            raise RefusedFile("a tensor whose storage is not in the file")
        size, stride = _ints(size, "size"), _ints(stride, "stride")
        if type(offset) is not int or offset < 0 or len(size) != len(stride) or min(size + stride, default=0) < 0:
            raise RefusedFile(f"tensor with size {size}, stride {stride}, offset {offset!r} is malformed")
        if hooks or metadata:
            raise RefusedFile("a tensor carrying backward hooks or metadata (changes what the model computes)")
        numel = 1
        for s in size:
            numel *= s
        itemsize = storage.tensor.element_size()
        self.tensor_bytes += numel * itemsize
        if self.tensor_bytes > self.max_bytes:
            raise RefusedFile(f"tensor of size {size} declares {numel * itemsize:,} bytes; the file's tensors "
                              f"exceed the {self.max_bytes >> 30} GiB limit")
        if numel:
            last = offset + sum((s - 1) * st for s, st in zip(size, stride))
            if last >= storage.tensor.numel():
                raise RefusedFile(f"tensor of size {size}, stride {stride}, offset {offset} reaches element "
                                  f"{last} of storage '{storage.key}', which holds {storage.tensor.numel()}")
        return storage.tensor.as_strided(size, stride, offset).requires_grad_(False)

    def rebuild_parameter(self, data, requires_grad, hooks):
        if not isinstance(data, torch.Tensor) or hooks:
            raise RefusedFile("a parameter carrying backward hooks (changes what the model computes)")
        return nn.Parameter(data, requires_grad=bool(requires_grad))

    def rebuild_parameter_with_state(self, data, requires_grad, hooks, state):
        if state:
            raise RefusedFile("a parameter with extra Python state")
        return self.rebuild_parameter(data, requires_grad, hooks)

    def rebuild_from_type(self, func, new_type, args, state):
        if new_type not in (torch.Tensor, nn.Parameter) or state or func not in (
                self.rebuild_tensor, self.rebuild_parameter):
            raise RefusedFile(f"a tensor of type {_name(new_type)} (only plain tensors and parameters)")
        return self.reduce(func, args)

    def ordered_dict(self, items=()):
        return OrderedDict(self._pairs(items))

    def set(self, items=()):
        return set(self._plain_items(items))

    def frozenset(self, items=()):
        return frozenset(self._plain_items(items))

    def getattr(self, obj, name):
        """snnTorch keeps ``ATan.apply``, Norse ``self.initial_state``: public attributes of
        allowed classes or their instances, which are methods, classes or autograd applies."""
        owner = obj if isinstance(obj, type) else type(obj)
        if not isinstance(name, str) or name.startswith("__") or not policy.allowed_class(owner):
            raise RefusedFile(f"getattr({_name(owner)}, {name!r}) is not allowed")
        value = getattr(obj, name)
        bound_to = getattr(value, "__self__", None)
        own_function = inspect.isfunction(value) and policy.class_module_allowed(value.__module__)
        if not (policy.allowed_class(value) or bound_to is obj or own_function):
            raise RefusedFile(f"getattr({_name(owner)}, {name!r}) is not a method or class")
        return value

    def encode(self, text, encoding="latin1"):
        if not isinstance(text, str) or encoding != "latin1":
            raise RefusedFile("_codecs.encode with unexpected arguments")
        return text.encode("latin1")

    def device(self, name, index=None):
        if not isinstance(name, str) or index is not None and type(index) is not int:
            raise RefusedFile("torch.device with unexpected arguments")
        return torch.device("cpu")

    def size(self, dims=()):
        return torch.Size(_ints(tuple(dims), "size"))

    def reconstructor(self, cls, base, state):
        if base is not object or state is not None:
            raise RefusedFile("copyreg._reconstructor with a base other than object")
        return self.newobj(cls, ())

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], policy.StorageType) and isinstance(pid[2], str)
                and type(pid[4]) is int and pid[4] >= 0):
            raise RefusedFile(f"persistent id {pid!r} is not a tensor storage")
        dtype, key, numel = pid[1].dtype, pid[2], pid[4]
        return _Storage(key, self.storage(key, dtype, numel))

    def _pairs(self, items):
        if isinstance(items, dict):
            items = list(items.items())
        if not isinstance(items, (list, tuple)) or not all(isinstance(p, tuple) and len(p) == 2 for p in items):
            raise RefusedFile("OrderedDict with unexpected arguments")
        return items

    @staticmethod
    def _plain_items(items):
        if not isinstance(items, (list, tuple)):
            raise RefusedFile("set with unexpected arguments")
        return items


#: The Unpickler methods REDUCE may call (the string values of policy.SPECIAL).
_CALLABLE = frozenset(v for v in policy.SPECIAL.values() if isinstance(v, str))


def _name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


# -- opcode table (protocol 2 plus the short forms later protocols use) ----------------------
def _op(code):
    def register(fn):
        _OPS[code] = fn
        return fn
    return register


_OPS: dict = {}
_STOP = object()
_OPS[b"."] = _STOP


def _push(value_of):
    return lambda u: u.stack.append(value_of(u))


_OPS[b"\x80"] = lambda u: u.read(1)                                        # PROTO
_OPS[b"\x95"] = lambda u: u.read(8)                                        # FRAME
_OPS[b"N"] = _push(lambda u: None)
_OPS[b"\x88"] = _push(lambda u: True)
_OPS[b"\x89"] = _push(lambda u: False)
_OPS[b")"] = _push(lambda u: ())
_OPS[b"]"] = _push(lambda u: [])
_OPS[b"}"] = _push(lambda u: {})
_OPS[b"J"] = _push(lambda u: struct.unpack("<i", u.read(4))[0])           # BININT
_OPS[b"K"] = _push(lambda u: u.read(1)[0])                                 # BININT1
_OPS[b"M"] = _push(lambda u: struct.unpack("<H", u.read(2))[0])            # BININT2
_OPS[b"\x8a"] = _push(lambda u: int.from_bytes(u.read(u.read(1)[0]), "little", signed=True))  # LONG1
_OPS[b"G"] = _push(lambda u: struct.unpack(">d", u.read(8))[0])            # BINFLOAT
_OPS[b"X"] = _push(lambda u: u.read(struct.unpack("<I", u.read(4))[0]).decode("utf-8", "surrogatepass"))
_OPS[b"\x8c"] = _push(lambda u: u.read(u.read(1)[0]).decode("utf-8", "surrogatepass"))  # SHORT_BINUNICODE
_OPS[b"C"] = _push(lambda u: u.read(u.read(1)[0]))                         # SHORT_BINBYTES
_OPS[b"B"] = _push(lambda u: u.read(struct.unpack("<I", u.read(4))[0]))    # BINBYTES
_OPS[b"("] = lambda u: (u.metastack.append(u.stack), setattr(u, "stack", []))  # MARK


@_op(b"t")                                                                  # TUPLE
def _tuple(u):
    items = tuple(u.pop_mark())   # pop first: the mark switches u.stack
    u.stack.append(items)


_OPS[b"\x85"] = lambda u: u.stack.append((u.stack.pop(),))                 # TUPLE1
_OPS[b"\x86"] = lambda u: u.stack.__setitem__(slice(-2, None), [tuple(u.stack[-2:])])
_OPS[b"\x87"] = lambda u: u.stack.__setitem__(slice(-3, None), [tuple(u.stack[-3:])])
_OPS[b"q"] = lambda u: u.memo.__setitem__(u.read(1)[0], u.stack[-1])       # BINPUT
_OPS[b"r"] = lambda u: u.memo.__setitem__(struct.unpack("<I", u.read(4))[0], u.stack[-1])
_OPS[b"h"] = _push(lambda u: u.memo[u.read(1)[0]])                         # BINGET
_OPS[b"j"] = _push(lambda u: u.memo[struct.unpack("<I", u.read(4))[0]])    # LONG_BINGET
_OPS[b"\x94"] = lambda u: u.memo.__setitem__(len(u.memo), u.stack[-1])     # MEMOIZE
_OPS[b"c"] = lambda u: u.global_(u.readline(), u.readline())               # GLOBAL


@_op(b"\x93")                                                               # STACK_GLOBAL
def _stack_global(u):
    name, module = u.stack.pop(), u.stack.pop()
    if not isinstance(name, str) or not isinstance(module, str):
        raise RefusedFile("STACK_GLOBAL with non-string names")
    u.global_(module, name)


@_op(b"a")                                                                  # APPEND
def _append(u):
    item = u.stack.pop()
    if type(u.stack[-1]) is not list:
        raise RefusedFile("APPEND to something not a list")
    u.stack[-1].append(item)


@_op(b"e")                                                                  # APPENDS
def _appends(u):
    items = u.pop_mark()
    if type(u.stack[-1]) is not list:
        raise RefusedFile("APPENDS to something not a list")
    u.stack[-1].extend(items)


def _dict_target(u):
    if type(u.stack[-1]) not in (dict, OrderedDict):
        raise RefusedFile("SETITEM on something not a dict")
    return u.stack[-1]


@_op(b"s")                                                                  # SETITEM
def _setitem(u):
    value, key = u.stack.pop(), u.stack.pop()
    _dict_target(u)[key] = value


@_op(b"u")                                                                  # SETITEMS
def _setitems(u):
    items = u.pop_mark()
    target = _dict_target(u)
    for i in range(0, len(items) - 1, 2):
        target[items[i]] = items[i + 1]


@_op(b"\x81")                                                               # NEWOBJ
def _newobj(u):
    args = u.stack.pop()
    u.stack[-1] = u.newobj(u.stack[-1], args)


@_op(b"R")                                                                  # REDUCE
def _reduce(u):
    args = u.stack.pop()
    u.stack[-1] = u.reduce(u.stack[-1], args)


@_op(b"b")                                                                  # BUILD
def _build(u):
    state = u.stack.pop()
    u.build(u.stack[-1], state)


@_op(b"Q")                                                                  # BINPERSID
def _binpersid(u):
    u.stack.append(u.persistent_load(u.stack.pop()))


#: Size of the pickle program itself (torch.save writes kilobytes; a zip could deflate gigabytes).
MAX_PICKLE_BYTES = 64 << 20


def read_pickle(archive: zipfile.ZipFile) -> bytes:
    """The archive's one ``<name>/data.pkl``, read with its size bounded."""
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise RefusedFile("the archive has no (or more than one) data.pkl")
    with archive.open(pickles[0]) as f:
        data = f.read(MAX_PICKLE_BYTES + 1)
    if len(data) > MAX_PICKLE_BYTES:
        raise RefusedFile(f"its pickle is over {MAX_PICKLE_BYTES >> 20} MiB")
    return data


def load_zip(path, max_bytes: int = MAX_TENSOR_BYTES):
    """The object in a torch.save zip archive, its storages read with declared sizes checked."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        program = read_pickle(archive)
        prefix = next(n for n in names if n.endswith("/data.pkl") and n.count("/") == 1)[:-len("data.pkl")]
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder") not in (b"little", b""):
            raise RefusedFile("tensors are stored big-endian")
        read_bytes, cache = [0], {}

        def storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            if key in cache:
                if cache[key].dtype != dtype or cache[key].numel() != numel:
                    raise RefusedFile(f"storage '{key}' is declared twice with different sizes")
                return cache[key]
            name = f"{prefix}data/{key}"
            if "/" in key or name not in names:
                raise RefusedFile(f"storage '{key}' is not in the archive")
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            read_bytes[0] += nbytes
            if read_bytes[0] > max_bytes:
                raise RefusedFile(f"storage '{key}' declares {nbytes:,} bytes; the file's storages exceed "
                                  f"the {max_bytes >> 30} GiB limit")
            with archive.open(name) as f:
                blob = f.read(nbytes + 1)
            if len(blob) != nbytes:
                raise RefusedFile(f"storage '{key}' declares {numel} elements ({nbytes} bytes) but holds "
                                  f"{len(blob)} bytes")
            cache[key] = torch.frombuffer(bytearray(blob), dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
            return cache[key]

        return Unpickler(program, storage, max_bytes).load()
