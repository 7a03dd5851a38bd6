"""Our own pickle interpreter: every opcode of protocols 0-5, nothing ever imported or run.

``pickle.Unpickler`` resolves each global by importing its module and calls whatever it finds.
:class:`PickleVM` instead resolves globals through an *exact* ``(module, name)`` allowlist of
inert tensor-rebuilding names (:data:`ALLOWLIST`), each mapped to a stand-in that builds plain
records (:class:`TensorRef`, :class:`StorageType`...). Every other name becomes an
:class:`UnknownGlobal` placeholder; calling it, instantiating it or setting its state yields more
inert placeholders (:class:`UnknownCall`). Dotted names are never resolved by walking attributes.

While it runs, the VM keeps a :class:`Trace` for the scanner: every global with its position,
every opcode of interest (EXT*, calls on unknown names, BUILD on unknown objects, INST/OBJ,
persistent ids) and whether the stream ended at STOP. Hard caps (:class:`Limits`) bound the
work and memory a hostile stream can cost; exceeding one raises :class:`PickleLimitError`.
Everything that goes wrong raises :class:`PickleVMError` (a :class:`~assetkit.errors.FormatError`).
"""

from __future__ import annotations

import _compat_pickle  # stdlib data tables only: the Python 2 -> 3 name mapping pickle applies
import codecs
import gc
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError
from .dtypes import BY_STORAGE_CLASS, BY_TORCH_NAME

__all__ = [
    "ALLOWLIST",
    "GlobalRef",
    "Limits",
    "PickleLimitError",
    "PickleVM",
    "PickleVMError",
    "Trace",
    "TraceEvent",
    "run_pickle",
]


# ---------------------------------------------------------------------------------------------
# Errors and limits
# ---------------------------------------------------------------------------------------------
class PickleVMError(FormatError):
    """The byte stream is not a valid pickle (or uses something the VM refuses)."""

    def __init__(self, message: str, where: str | None = None, code: str = "pickle-error",
                 position: int | None = None) -> None:
        super().__init__(message, where, code)
        self.position = position


class PickleLimitError(PickleVMError):
    """A hard cap (:class:`Limits`) was exceeded: the stream is hostile or absurdly large."""

    def __init__(self, message: str, where: str | None = None, position: int | None = None) -> None:
        super().__init__(message, where, "pickle-limit", position)


@dataclass(frozen=True)
class Limits:
    """Hard caps on what one pickle may cost. Defaults leave room for any real checkpoint."""

    max_opcodes: int = 5_000_000
    max_memo: int = 1_000_000
    max_stack: int = 1_000_000  #: items on the current stack
    max_marks: int = 100_000  #: nested MARKs
    max_bytes: int = 512 * 1024 * 1024  #: total length of all strings/bytes read
    max_item: int = 256 * 1024 * 1024  #: length of one string/bytes/int argument
    max_frame: int = 256 * 1024 * 1024  #: FRAME length
    max_persistent_ids: int = 1_000_000
    max_line: int = 256 * 1024 * 1024  #: text-protocol argument lines
    max_key_depth: int = 64  #: nesting of tuples used as dict keys / set items


DEFAULT_LIMITS = Limits()


# ---------------------------------------------------------------------------------------------
# Trace
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GlobalRef:
    """One global named by the stream. ``module``/``name`` are as written; ``canonical`` is the
    ``module.name`` pickle would look up (protocol < 3 maps Python 2 names, ``__builtin__`` ->
    ``builtins``). ``allowed`` is True only for exact :data:`ALLOWLIST` entries."""

    module: str
    name: str
    position: int
    opcode: str
    canonical_module: str
    canonical_name: str
    allowed: bool

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def canonical(self) -> str:
        return f"{self.canonical_module}.{self.canonical_name}"


@dataclass(frozen=True)
class TraceEvent:
    """An opcode the scanner should judge: ``kind`` is one of ``ext``, ``call-unknown``,
    ``newobj-unknown``, ``build-unknown``, ``build-dunder``, ``inst``, ``obj``, ``persid``,
    ``bad-call`` (an allowlisted stand-in called with arguments it does not accept),
    ``next-buffer``."""

    kind: str
    position: int
    detail: str
    target: str = ""  #: ``module.name`` of the global involved (``result of m.n`` for a call's result)


@dataclass
class Trace:
    globals: list[GlobalRef] = field(default_factory=list)
    events: list[TraceEvent] = field(default_factory=list)
    persistent_ids: int = 0
    opcodes: int = 0
    protocol: int = 0
    start: int = 0
    end: int = 0  #: position after the last opcode read
    stopped: bool = False  #: ended with STOP

    def unknown_names(self) -> list[str]:
        return sorted({g.qualname for g in self.globals if not g.allowed})


# ---------------------------------------------------------------------------------------------
# Inert values
# ---------------------------------------------------------------------------------------------
class Inert:
    """Base class of every value the VM makes up in place of a real object. Hashed by identity."""

    __slots__ = ()


class UnknownGlobal(Inert):
    """A global that is not on the allowlist: never imported, just named."""

    __slots__ = ("module", "name", "position")

    def __init__(self, module: str, name: str, position: int) -> None:
        self.module, self.name, self.position = module, name, position

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<unknown global {self.qualname}>"


class UnknownCall(Inert):
    """What calling / instantiating an unknown global (or a bad call) would have produced."""

    __slots__ = ("func", "args", "kwargs", "state", "items", "position")

    def __init__(self, func: Any, args: Any, position: int, kwargs: Any = None) -> None:
        self.func, self.args, self.kwargs, self.position = func, args, kwargs, position
        self.state: list[Any] = []
        self.items: list[Any] = []

    @property
    def qualname(self) -> str:
        return getattr(self.func, "qualname", type(self.func).__name__)

    def __repr__(self) -> str:
        return f"<inert call of {self.qualname}>"


class PersistentRef(Inert):
    """A persistent id (torch: ``('storage', storage_type, key, location, numel)``)."""

    __slots__ = ("pid", "position")

    def __init__(self, pid: Any, position: int) -> None:
        self.pid, self.position = pid, position

    def __repr__(self) -> str:
        return f"<persistent id at {self.position}>"


class StorageType(Inert):
    """``torch.HalfStorage`` & co. ``dtype`` is the safetensors id, None for ``UntypedStorage``."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str | None) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


class TorchDType(Inert):
    """``torch.float16`` & co."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class TensorRef(Inert):
    """A tensor as ``_rebuild_tensor_v2`` & co. would build it: a view of a storage."""

    __slots__ = ("storage", "storage_offset", "size", "stride", "dtype", "parameter", "position")

    def __init__(self, storage: Any, storage_offset: Any, size: Any, stride: Any, dtype: Any,
                 position: int) -> None:
        self.storage, self.storage_offset, self.size, self.stride = storage, storage_offset, size, stride
        self.dtype = dtype  #: TorchDType for _rebuild_tensor_v3, else None (from the storage type)
        self.parameter = False
        self.position = position

    def __repr__(self) -> str:
        return f"<tensor {self.size!r}>"


class NumpyDType(Inert):
    """``numpy.dtype(descr)`` for a plain scalar type (``'<f8'``...)."""

    __slots__ = ("descr", "byteorder")

    def __init__(self, descr: str) -> None:
        self.descr, self.byteorder = descr, "="


class InertDict(dict):
    """What ``collections.OrderedDict`` becomes: a dict that can also take BUILD state
    (torch state dicts carry ``_metadata``)."""

    __slots__ = ("attrs",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.attrs: dict[str, Any] = {}


class _BadArgs(Exception):
    """Raised by a stand-in that does not accept its arguments."""


@dataclass(frozen=True)
class StandIn:
    """An allowlisted (or known-inert) name: ``call(args, position)`` builds an inert value."""

    module: str
    name: str
    call: Callable[[tuple, int], Any] | None = None  #: None: the name is a value, not callable
    value: Any = None  #: what the global itself evaluates to when not merely called

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


# ---------------------------------------------------------------------------------------------
# Stand-ins
# ---------------------------------------------------------------------------------------------
def _rebuild_tensor_v2(args: tuple, position: int) -> TensorRef:
    if not 4 <= len(args) <= 7:
        raise _BadArgs(f"expects 4 to 7 arguments, got {len(args)}")
    return TensorRef(args[0], args[1], args[2], args[3], None, position)


def _rebuild_tensor_v3(args: tuple, position: int) -> TensorRef:
    if not 7 <= len(args) <= 8:
        raise _BadArgs(f"expects 7 or 8 arguments, got {len(args)}")
    if not isinstance(args[6], TorchDType):
        raise _BadArgs("dtype argument is not a torch dtype")
    return TensorRef(args[0], args[1], args[2], args[3], args[6], position)


def _rebuild_tensor(args: tuple, position: int) -> TensorRef:
    if len(args) != 4:
        raise _BadArgs(f"expects 4 arguments, got {len(args)}")
    return TensorRef(args[0], args[1], args[2], args[3], None, position)


def _rebuild_parameter(args: tuple, position: int) -> Any:
    if len(args) not in (3, 4) or not isinstance(args[0], TensorRef):
        raise _BadArgs("expects (tensor, requires_grad, backward_hooks[, state])")
    args[0].parameter = True
    return args[0]


def _rebuild_from_type_v2(args: tuple, position: int) -> Any:
    # (func, new_type, args, state): torch calls func(*args) then sets the state on the result.
    if len(args) != 4 or not isinstance(args[0], StandIn) or args[0].call is None:
        raise _BadArgs("expects (allowlisted rebuild function, type, args, state)")
    if not isinstance(args[1], StandIn) or args[1].qualname not in _TENSOR_TYPES:
        raise _BadArgs("new type is not torch.Tensor or torch.nn.Parameter")
    if not isinstance(args[2], tuple):
        raise _BadArgs("args is not a tuple")
    return args[0].call(args[2], position)


def _ordered_dict(args: tuple, position: int) -> InertDict:
    if not args:
        return InertDict()
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        out = InertDict()
        for pair in args[0]:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise _BadArgs("items are not (key, value) pairs")
            _check_key(pair[0], DEFAULT_LIMITS.max_key_depth)
            out[pair[0]] = pair[1]
        return out
    raise _BadArgs("expects no argument or a list of pairs")


def _torch_size(args: tuple, position: int) -> tuple:
    if len(args) == 1 and isinstance(args[0], (list, tuple)) and all(type(d) is int for d in args[0]):
        return tuple(args[0])
    raise _BadArgs("expects a sequence of ints")


def _torch_device(args: tuple, position: int) -> str:
    if 1 <= len(args) <= 2 and isinstance(args[0], str) and (len(args) == 1 or type(args[1]) is int):
        return args[0] if len(args) == 1 else f"{args[0]}:{args[1]}"
    raise _BadArgs("expects (type[, index])")


def _make_set(args: tuple, position: int) -> set:
    if not args:
        return set()
    if len(args) == 1 and isinstance(args[0], (list, tuple, set, frozenset)):
        for item in args[0]:
            _check_key(item, DEFAULT_LIMITS.max_key_depth)
        return set(args[0])
    raise _BadArgs("expects one list")


def _make_frozenset(args: tuple, position: int) -> frozenset:
    return frozenset(_make_set(args, position))


def _make_bytearray(args: tuple, position: int) -> bytearray:
    if not args:
        return bytearray()
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and args[1] in _LATIN1:
        return bytearray(args[0].encode("latin-1"))
    raise _BadArgs("expects bytes")


def _make_bytes(args: tuple, position: int) -> bytes:
    # Protocols < 3 pickle b"" as builtins.bytes(); only that and bytes(bytes) are accepted.
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    raise _BadArgs("expects no argument")


_LATIN1 = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1"})


def _codecs_encode(args: tuple, position: int) -> bytes:
    # Protocol 2 pickles ``bytes`` as _codecs.encode(str, 'latin1'). Only that exact form.
    if len(args) == 2 and isinstance(args[0], str) and args[1] in _LATIN1:
        try:
            return args[0].encode("latin-1")
        except UnicodeEncodeError:
            raise _BadArgs("text is not latin-1") from None
    raise _BadArgs("only encode(str, 'latin1') is accepted")


_NUMPY_SCALAR_CODES = {
    "b1": "?", "i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q",
    "u8": "Q", "f2": "e", "f4": "f", "f8": "d",
}


def _numpy_dtype(args: tuple, position: int) -> NumpyDType:
    if 1 <= len(args) <= 3 and isinstance(args[0], str) and args[0].lstrip("<>|=") in _NUMPY_SCALAR_CODES:
        return NumpyDType(args[0])
    raise _BadArgs("only plain numeric dtypes are decoded")


def _numpy_scalar(args: tuple, position: int) -> Any:
    if len(args) == 2 and isinstance(args[0], NumpyDType) and isinstance(args[1], (bytes, bytearray)):
        descr = args[0].descr
        order = descr[0] if descr[0] in "<>" else args[0].byteorder
        code = _NUMPY_SCALAR_CODES[descr.lstrip("<>|=")]
        fmt = (">" if order == ">" else "<") + code
        if struct.calcsize(fmt) == len(args[1]):
            value = struct.unpack(fmt, args[1])[0]
            return bool(value) if code == "?" else value
    raise _BadArgs("not a plain numeric scalar")


#: Tensor types ``_rebuild_from_type_v2`` may name.
_TENSOR_TYPES = frozenset({"torch.Tensor", "torch.nn.parameter.Parameter"})


def _build_standins() -> tuple[dict[tuple[str, str], StandIn], frozenset[tuple[str, str]]]:
    allowed: dict[tuple[str, str], StandIn] = {}

    def add(module: str, name: str, call: Callable[[tuple, int], Any] | None = None, value: Any = None) -> None:
        allowed[(module, name)] = StandIn(module, name, call, value)

    add("torch._utils", "_rebuild_tensor", _rebuild_tensor)
    add("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2)
    add("torch._utils", "_rebuild_tensor_v3", _rebuild_tensor_v3)
    add("torch._utils", "_rebuild_parameter", _rebuild_parameter)
    add("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter)
    add("torch._tensor", "_rebuild_from_type_v2", _rebuild_from_type_v2)
    add("torch", "Tensor")
    add("torch.nn.parameter", "Parameter")
    for storage_class, row in BY_STORAGE_CLASS.items():
        add("torch", storage_class, value=StorageType(storage_class, row.id))
    add("torch", "UntypedStorage", value=StorageType("UntypedStorage", None))
    add("torch.storage", "UntypedStorage", value=StorageType("UntypedStorage", None))
    for torch_name, row in BY_TORCH_NAME.items():
        add("torch", torch_name, value=TorchDType(torch_name, row.id))
    add("torch", "Size", _torch_size)
    add("torch", "device", _torch_device)
    add("collections", "OrderedDict", _ordered_dict)
    add("builtins", "set", _make_set)
    add("builtins", "frozenset", _make_frozenset)
    add("builtins", "bytearray", _make_bytearray)
    add("builtins", "bytes", _make_bytes)
    add("_codecs", "encode", _codecs_encode)
    allowlist = frozenset(allowed)
    # Known-inert decoders for names that are NOT on the allowlist (the scanner reports them as
    # info): numpy scalars in training metadata. Still never imported.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        add(module, "scalar", _numpy_scalar)
    add("numpy", "dtype", _numpy_dtype)
    return allowed, allowlist


#: (module, name) -> stand-in, for the allowlist plus the known-inert decoders.
STANDINS, ALLOWLIST = _build_standins()


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def canonical_global(module: str, name: str, proto: int) -> tuple[str, str]:
    """The (module, name) ``pickle`` would import: protocols < 3 map Python 2 names
    (``__builtin__`` -> ``builtins``, ``copy_reg`` -> ``copyreg``...) like ``fix_imports``."""
    if proto < 3:
        mapped = _compat_pickle.NAME_MAPPING.get((module, name))
        if mapped is not None:
            return mapped
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return module, name


_KEY_TYPES = (str, int, float, bool, bytes, type(None), complex, Inert, StandIn)


def _check_key(value: Any, max_depth: int) -> None:
    """Refuse values that cannot be dict keys / set items, and tuples nested so deep that
    hashing them would overflow the C stack. Iterative: never recurses itself."""
    if isinstance(value, _KEY_TYPES):
        return
    todo = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (tuple, frozenset)):
            if depth >= max_depth:
                raise PickleVMError(f"dict key / set item nested deeper than {max_depth} levels")
            todo.extend((child, depth + 1) for child in item)
        elif not isinstance(item, _KEY_TYPES):
            raise PickleVMError(f"unhashable {type(item).__name__} used as a dict key or set item")


def _target_name(value: Any) -> str:
    """The global an event concerns: ``module.name``, or ``result of module.name``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (UnknownGlobal, StandIn)):
        return value.qualname
    if isinstance(value, UnknownCall):
        inner = _target_name(value.func)
        return inner if inner.startswith("result of ") else f"result of {inner}"
    return f"<{type(value).__name__}>"


def _type_name(value: Any) -> str:
    if isinstance(value, (Inert, StandIn)):
        return repr(value)
    return type(value).__name__


# Opcode bytes
_OP_NAMES = {
    b"(": "MARK", b".": "STOP", b"0": "POP", b"1": "POP_MARK", b"2": "DUP", b"F": "FLOAT", b"I": "INT",
    b"J": "BININT", b"K": "BININT1", b"L": "LONG", b"M": "BININT2", b"N": "NONE", b"P": "PERSID",
    b"Q": "BINPERSID", b"R": "REDUCE", b"S": "STRING", b"T": "BINSTRING", b"U": "SHORT_BINSTRING",
    b"V": "UNICODE", b"X": "BINUNICODE", b"a": "APPEND", b"b": "BUILD", b"c": "GLOBAL", b"d": "DICT",
    b"}": "EMPTY_DICT", b"e": "APPENDS", b"g": "GET", b"h": "BINGET", b"i": "INST", b"j": "LONG_BINGET",
    b"l": "LIST", b"]": "EMPTY_LIST", b"o": "OBJ", b"p": "PUT", b"q": "BINPUT", b"r": "LONG_BINPUT",
    b"s": "SETITEM", b"t": "TUPLE", b")": "EMPTY_TUPLE", b"u": "SETITEMS", b"G": "BINFLOAT",
    b"\x80": "PROTO", b"\x81": "NEWOBJ", b"\x82": "EXT1", b"\x83": "EXT2", b"\x84": "EXT4",
    b"\x85": "TUPLE1", b"\x86": "TUPLE2", b"\x87": "TUPLE3", b"\x88": "NEWTRUE", b"\x89": "NEWFALSE",
    b"\x8a": "LONG1", b"\x8b": "LONG4", b"B": "BINBYTES", b"C": "SHORT_BINBYTES",
    b"\x8c": "SHORT_BINUNICODE", b"\x8d": "BINUNICODE8", b"\x8e": "BINBYTES8", b"\x8f": "EMPTY_SET",
    b"\x90": "ADDITEMS", b"\x91": "FROZENSET", b"\x92": "NEWOBJ_EX", b"\x93": "STACK_GLOBAL",
    b"\x94": "MEMOIZE", b"\x95": "FRAME", b"\x96": "BYTEARRAY8", b"\x97": "NEXT_BUFFER",
    b"\x98": "READONLY_BUFFER",
}
OPCODE_NAMES: dict[int, str] = {code[0]: name for code, name in _OP_NAMES.items()}

_unpack_from = struct.unpack_from
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct(">d")

_STOP = object()  # returned by the STOP handler


class PickleVM:
    """Interpret one pickle from ``data[start:]`` (``bytes`` or ``mmap``), never executing it.

    ``where`` names the source in error messages; ``base`` is added to positions (so that
    positions in a zip member can be reported as file offsets). ``persistent_load`` maps a
    persistent id to a value (default: a :class:`PersistentRef`). After :meth:`run` (or after it
    raised), :attr:`trace` holds what the scanner needs.
    """

    def __init__(self, data: Any, start: int = 0, *, end: int | None = None, where: str = "",
                 limits: Limits = DEFAULT_LIMITS, base: int = 0,
                 persistent_load: Callable[[Any, int], Any] | None = None,
                 buffers: Iterable[Any] | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else min(end, len(data))
        self.where = where
        self.limits = limits
        self.base = base
        self.persistent_load = persistent_load
        self.buffers = iter(buffers) if buffers is not None else None
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.bytes_read = 0
        self.op_pos = start
        self.trace = Trace(start=start + base, end=start + base)
        self.proto = 0

    # ---- errors ------------------------------------------------------------------------------
    def _error(self, message: str) -> PickleVMError:
        position = self.op_pos + self.base
        return PickleVMError(f"{message} (opcode at byte {position})", self.where or None, position=position)

    def _limit(self, message: str) -> PickleLimitError:
        position = self.op_pos + self.base
        return PickleLimitError(f"{message} (at byte {position})", self.where or None, position=position)

    # ---- reading -----------------------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        pos = self.pos
        stop = pos + n
        if n < 0 or stop > self.end:
            raise self._error("pickle truncated: argument runs past the end of the data")
        self.pos = stop
        return self.data[pos:stop]

    def _take_item(self, n: int) -> bytes:
        limits = self.limits
        if n > limits.max_item:
            raise self._limit(f"string of {n} bytes exceeds the {limits.max_item}-byte cap")
        self.bytes_read += n
        if self.bytes_read > limits.max_bytes:
            raise self._limit(f"strings total more than the {limits.max_bytes}-byte cap")
        return self._take(n)

    def _readline(self) -> bytes:
        pos = self.pos
        limit = min(self.end, pos + self.limits.max_line + 1)
        nl = self.data.find(b"\n", pos, limit)
        if nl < 0:
            if limit < self.end:
                raise self._limit(f"text argument longer than {self.limits.max_line} bytes")
            raise self._error("pickle truncated: text argument has no end of line")
        self.pos = nl + 1
        line = self.data[pos:nl]
        self.bytes_read += len(line)
        if self.bytes_read > self.limits.max_bytes:
            raise self._limit(f"strings total more than the {self.limits.max_bytes}-byte cap")
        return bytes(line)

    def _byte(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise self._error("pickle truncated: argument runs past the end of the data")
        self.pos = pos + 1
        return self.data[pos]

    def _unpack(self, st: struct.Struct) -> Any:
        pos = self.pos
        if pos + st.size > self.end:
            raise self._error("pickle truncated: argument runs past the end of the data")
        self.pos = pos + st.size
        return st.unpack_from(self.data, pos)[0]

    # ---- stack -------------------------------------------------------------------------------
    def _pop(self) -> Any:
        try:
            return self.stack.pop()
        except IndexError:
            raise self._error("stack underflow") from None

    def _top(self) -> Any:
        if not self.stack:
            raise self._error("stack underflow")
        return self.stack[-1]

    def _pop_mark(self) -> list[Any]:
        items = self.stack
        try:
            self.stack = self.metastack.pop()
        except IndexError:
            raise self._error("MARK expected but not found") from None
        return items

    def _memo_put(self, index: int, value: Any) -> None:
        if index < 0:
            raise self._error("negative memo index")
        memo = self.memo
        if index not in memo and len(memo) >= self.limits.max_memo:
            raise self._limit(f"memo holds more than {self.limits.max_memo} entries")
        memo[index] = value

    def _memo_get(self, index: int) -> Any:
        try:
            return self.memo[index]
        except KeyError:
            raise self._error(f"memo entry {index} was never stored") from None

    def _event(self, kind: str, detail: str, target: Any = None) -> None:
        self.trace.events.append(TraceEvent(kind, self.op_pos + self.base, detail, _target_name(target)))

    # ---- globals -----------------------------------------------------------------------------
    def _find_class(self, module: str, name: str, opcode: str) -> Any:
        canonical_module, canonical_name = canonical_global(module, name, self.proto)
        key = (canonical_module, canonical_name)
        allowed = key in ALLOWLIST
        ref = GlobalRef(module, name, self.op_pos + self.base, opcode, canonical_module, canonical_name, allowed)
        self.trace.globals.append(ref)
        standin = STANDINS.get(key)
        if standin is not None:
            return standin
        return UnknownGlobal(module, name, self.op_pos + self.base)

    # ---- calls -------------------------------------------------------------------------------
    def _call(self, func: Any, args: Any, kind: str = "call") -> Any:
        position = self.op_pos + self.base
        if not isinstance(args, tuple):
            if isinstance(func, StandIn):
                self._event("bad-call", f"{func.qualname}: arguments are not a tuple", func)
            else:
                self._event(f"{kind}-unknown", f"{_type_name(func)} called", func)
            return UnknownCall(func, args, position)
        if isinstance(func, StandIn) and func.call is not None:
            try:
                return func.call(args, position)
            except _BadArgs as exc:
                self._event("bad-call", f"{func.qualname}: {exc}", func)
                return UnknownCall(func, args, position)
        if isinstance(func, StandIn):
            self._event("bad-call", f"{func.qualname} is not callable", func)
        else:
            self._event(f"{kind}-unknown", f"{_type_name(func)} called", func)
        return UnknownCall(func, args, position)

    def _value_of_global(self, value: Any) -> Any:
        if isinstance(value, StandIn) and value.value is not None:
            return value.value
        return value

    # ---- main loop ---------------------------------------------------------------------------
    def run(self) -> Any:
        """Interpret until STOP; return the top of the stack."""
        dispatch = _DISPATCH
        data = self.data
        limits = self.limits
        max_ops, max_stack = limits.max_opcodes, limits.max_stack
        trace = self.trace
        count = 0
        # The VM allocates many small containers and creates no cycles of its own: collector
        # passes over a growing memo would cost more than the interpretation itself.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            while True:
                pos = self.pos
                if pos >= self.end:
                    self.op_pos = pos
                    raise self._error("pickle truncated: no STOP opcode")
                self.op_pos = pos
                op = data[pos]
                self.pos = pos + 1
                count += 1
                if count > max_ops:
                    raise self._limit(f"more than {max_ops} opcodes")
                handler = dispatch[op]
                if handler is None:
                    raise self._error(f"invalid opcode 0x{op:02x}")
                if handler(self) is _STOP:
                    break
                if len(self.stack) > max_stack:
                    raise self._limit(f"stack deeper than {max_stack} items")
        except PickleVMError:
            raise
        except RecursionError:
            raise self._error("structure nested too deeply") from None
        except MemoryError:
            raise self._limit("out of memory") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            op_name = OPCODE_NAMES.get(self.data[self.op_pos], "?") if self.op_pos < self.end else "?"
            raise self._error(f"{op_name}: {type(exc).__name__}: {exc}") from None
        finally:
            if gc_was_enabled:
                gc.enable()
            trace.opcodes = count
            trace.protocol = self.proto
            trace.end = self.pos + self.base
        trace.stopped = True
        if self.metastack:
            # CPython ignores a dangling MARK at STOP; we note it but accept the value.
            self._event("dangling-mark", "MARK left open at STOP")
        if not self.stack:
            raise self._error("STOP with an empty stack")
        return self.stack[-1]

    # ---- opcode handlers (each reads its argument from self.pos) --------------------------------
    def op_mark(self) -> None:
        if len(self.metastack) >= self.limits.max_marks:
            raise self._limit(f"more than {self.limits.max_marks} nested MARKs")
        self.metastack.append(self.stack)
        self.stack = []

    def op_stop(self) -> object:
        return _STOP

    def op_pop(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def op_pop_mark(self) -> None:
        self._pop_mark()

    def op_dup(self) -> None:
        self.stack.append(self._top())

    def op_float(self) -> None:
        try:
            self.stack.append(float(self._readline()))
        except ValueError:
            raise self._error("FLOAT argument is not a number") from None

    def op_int(self) -> None:
        line = self._readline()
        if line == b"00":
            self.stack.append(False)
        elif line == b"01":
            self.stack.append(True)
        else:
            try:
                self.stack.append(int(line, 0))
            except ValueError:
                raise self._error("INT argument is not an integer") from None

    def op_binint(self) -> None:
        self.stack.append(self._unpack(_I32))

    def op_binint1(self) -> None:
        self.stack.append(self._byte())

    def op_binint2(self) -> None:
        self.stack.append(self._unpack(_U16))

    def op_long(self) -> None:
        line = self._readline()
        if line.endswith(b"L"):
            line = line[:-1]
        try:
            self.stack.append(int(line, 0))
        except ValueError:
            raise self._error("LONG argument is not an integer") from None

    def op_long1(self) -> None:
        n = self._byte()
        self.stack.append(int.from_bytes(self._take_item(n), "little", signed=True))

    def op_long4(self) -> None:
        n = self._unpack(_I32)
        if n < 0:
            raise self._error("LONG4 with negative byte count")
        self.stack.append(int.from_bytes(self._take_item(n), "little", signed=True))

    def op_none(self) -> None:
        self.stack.append(None)

    def op_newtrue(self) -> None:
        self.stack.append(True)

    def op_newfalse(self) -> None:
        self.stack.append(False)

    def op_binfloat(self) -> None:
        self.stack.append(self._unpack(_F64))

    # strings
    def _decode_str8(self, raw: bytes) -> str:
        # Python 2 str: torch.load decodes with utf-8; fall back to latin-1 so any byte string loads.
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def op_string(self) -> None:
        line = self._readline()
        if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b'"', b"'"):
            line = line[1:-1]
        else:
            raise self._error("STRING argument is not quoted")
        try:
            raw = codecs.escape_decode(line)[0]
        except ValueError:
            raise self._error("STRING argument has a bad escape") from None
        self.stack.append(self._decode_str8(raw))

    def op_binstring(self) -> None:
        n = self._unpack(_I32)
        if n < 0:
            raise self._error("BINSTRING with negative length")
        self.stack.append(self._decode_str8(bytes(self._take_item(n))))

    def op_short_binstring(self) -> None:
        self.stack.append(self._decode_str8(bytes(self._take_item(self._byte()))))

    def op_binbytes(self) -> None:
        self.stack.append(bytes(self._take_item(self._unpack(_U32))))

    def op_short_binbytes(self) -> None:
        self.stack.append(bytes(self._take_item(self._byte())))

    def op_binbytes8(self) -> None:
        self.stack.append(bytes(self._take_item(self._unpack(_U64))))

    def op_bytearray8(self) -> None:
        self.stack.append(bytearray(self._take_item(self._unpack(_U64))))

    def _text(self, raw: bytes) -> str:
        try:
            return str(raw, "utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self._error("string is not valid UTF-8") from None

    def op_unicode(self) -> None:
        line = self._readline()
        try:
            self.stack.append(str(line, "raw-unicode-escape"))
        except UnicodeDecodeError:
            raise self._error("UNICODE argument is not valid raw-unicode-escape") from None

    def op_binunicode(self) -> None:
        self.stack.append(self._text(self._take_item(self._unpack(_U32))))

    def op_short_binunicode(self) -> None:
        self.stack.append(self._text(self._take_item(self._byte())))

    def op_binunicode8(self) -> None:
        self.stack.append(self._text(self._take_item(self._unpack(_U64))))

    # containers
    def op_empty_tuple(self) -> None:
        self.stack.append(())

    def op_tuple(self) -> None:
        items = tuple(self._pop_mark())
        self.stack.append(items)

    def op_tuple1(self) -> None:
        stack = self.stack
        if not stack:
            raise self._error("stack underflow")
        stack[-1] = (stack[-1],)

    def op_tuple2(self) -> None:
        stack = self.stack
        if len(stack) < 2:
            raise self._error("stack underflow")
        stack[-2:] = [(stack[-2], stack[-1])]

    def op_tuple3(self) -> None:
        stack = self.stack
        if len(stack) < 3:
            raise self._error("stack underflow")
        stack[-3:] = [(stack[-3], stack[-2], stack[-1])]

    def op_empty_list(self) -> None:
        self.stack.append([])

    def op_list(self) -> None:
        items = self._pop_mark()
        self.stack.append(items)

    def op_empty_dict(self) -> None:
        self.stack.append({})

    def op_dict(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise self._error("DICT with an odd number of items")
        out: dict[Any, Any] = {}
        depth = self.limits.max_key_depth
        for i in range(0, len(items), 2):
            _check_key_at(self, items[i], depth)
            out[items[i]] = items[i + 1]
        self.stack.append(out)

    def op_empty_set(self) -> None:
        self.stack.append(set())

    def op_frozenset(self) -> None:
        items = self._pop_mark()
        depth = self.limits.max_key_depth
        for item in items:
            _check_key_at(self, item, depth)
        self.stack.append(frozenset(items))

    def op_append(self) -> None:
        value = self._pop()
        self._extend(self._top(), [value])

    def op_appends(self) -> None:
        items = self._pop_mark()
        self._extend(self._top(), items)

    def _extend(self, target: Any, items: list[Any]) -> None:
        if type(target) is list:
            target.extend(items)
        elif isinstance(target, UnknownCall):
            if len(target.items) + len(items) > self.limits.max_stack:
                raise self._limit("too many items appended to one object")
            target.items.extend(items)
        else:
            raise self._error(f"APPEND to a {_type_name(target)}")

    def op_setitem(self) -> None:
        value = self._pop()
        key = self._pop()
        self._setitems(self._top(), [key, value])

    def op_setitems(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise self._error("SETITEMS with an odd number of items")
        self._setitems(self._top(), items)

    def _setitems(self, target: Any, items: list[Any]) -> None:
        if isinstance(target, dict):
            depth = self.limits.max_key_depth
            for i in range(0, len(items), 2):
                _check_key_at(self, items[i], depth)
                target[items[i]] = items[i + 1]
        elif isinstance(target, UnknownCall):
            if len(target.items) + len(items) > self.limits.max_stack:
                raise self._limit("too many items set on one object")
            target.items.extend(items)
        else:
            raise self._error(f"SETITEM on a {_type_name(target)}")

    def op_additems(self) -> None:
        items = self._pop_mark()
        target = self._top()
        if isinstance(target, set):
            depth = self.limits.max_key_depth
            for item in items:
                _check_key_at(self, item, depth)
            target.update(items)
        elif isinstance(target, UnknownCall):
            target.items.extend(items)
        else:
            raise self._error(f"ADDITEMS on a {_type_name(target)}")

    # memo
    def op_get(self) -> None:
        try:
            index = int(self._readline())
        except ValueError:
            raise self._error("GET argument is not an integer") from None
        self.stack.append(self._memo_get(index))

    def op_binget(self) -> None:
        self.stack.append(self._memo_get(self._byte()))

    def op_long_binget(self) -> None:
        self.stack.append(self._memo_get(self._unpack(_U32)))

    def op_put(self) -> None:
        try:
            index = int(self._readline())
        except ValueError:
            raise self._error("PUT argument is not an integer") from None
        self._memo_put(index, self._top())

    def op_binput(self) -> None:
        self._memo_put(self._byte(), self._top())

    def op_long_binput(self) -> None:
        self._memo_put(self._unpack(_U32), self._top())

    def op_memoize(self) -> None:
        self._memo_put(len(self.memo), self._top())

    # protocol framing
    def op_proto(self) -> None:
        proto = self._byte()
        if proto > 5:
            raise self._error(f"unsupported pickle protocol {proto}")
        self.proto = proto

    def op_frame(self) -> None:
        size = self._unpack(_U64)
        if size > self.limits.max_frame:
            raise self._limit(f"frame of {size} bytes exceeds the {self.limits.max_frame}-byte cap")
        if self.pos + size > self.end:
            raise self._error("pickle truncated: frame runs past the end of the data")

    # globals and objects
    def op_global(self) -> None:
        module = self._text(self._readline())
        name = self._text(self._readline())
        self.stack.append(self._value_of_global(self._find_class(module, name, "GLOBAL")))

    def op_stack_global(self) -> None:
        name = self._pop()
        module = self._pop()
        if type(name) is not str or type(module) is not str:
            raise self._error("STACK_GLOBAL requires two strings")
        self.stack.append(self._value_of_global(self._find_class(module, name, "STACK_GLOBAL")))

    def _ext(self, code: int) -> None:
        # The copyreg extension registry of whatever process loads the file decides what this
        # names: unknowable here, so it is a placeholder and an event.
        self._event("ext", f"extension code {code}", f"copyreg.extension[{code}]")
        self.trace.globals.append(
            GlobalRef("copyreg", f"extension[{code}]", self.op_pos + self.base, "EXT", "copyreg",
                      f"extension[{code}]", False)
        )
        self.stack.append(UnknownGlobal("copyreg", f"extension[{code}]", self.op_pos + self.base))

    def op_ext1(self) -> None:
        self._ext(self._byte())

    def op_ext2(self) -> None:
        self._ext(self._unpack(_U16))

    def op_ext4(self) -> None:
        code = self._unpack(_I32)
        self._ext(code)

    def op_reduce(self) -> None:
        args = self._pop()
        stack = self.stack
        if not stack:
            raise self._error("stack underflow")
        stack[-1] = self._call(stack[-1], args)

    def op_newobj(self) -> None:
        args = self._pop()
        cls = self._pop()
        self.stack.append(self._newobj(cls, args, None))

    def op_newobj_ex(self) -> None:
        kwargs = self._pop()
        args = self._pop()
        cls = self._pop()
        self.stack.append(self._newobj(cls, args, kwargs))

    def _newobj(self, cls: Any, args: Any, kwargs: Any) -> Any:
        # cls.__new__(cls, *args): no allowlisted name is built this way by torch.save.
        position = self.op_pos + self.base
        self._event("newobj-unknown", f"{_type_name(cls)} instantiated", cls)
        return UnknownCall(cls, args, position, kwargs)

    def op_inst(self) -> None:
        module = self._text(self._readline())
        name = self._text(self._readline())
        args = tuple(self._pop_mark())
        cls = self._value_of_global(self._find_class(module, name, "INST"))
        self._event("inst", f"{module}.{name} instantiated by INST", cls)
        self.stack.append(self._call(cls, args))

    def op_obj(self) -> None:
        items = self._pop_mark()
        if not items:
            raise self._error("OBJ without a class")
        cls, args = items[0], tuple(items[1:])
        self._event("obj", f"{_type_name(cls)} instantiated by OBJ", cls)
        self.stack.append(self._call(cls, args))

    def op_build(self) -> None:
        state = self._pop()
        inst = self._top()
        if isinstance(state, dict) or (isinstance(state, tuple) and len(state) == 2):
            dicts = [state] if isinstance(state, dict) else [s for s in state if isinstance(s, dict)]
            for d in dicts:
                dunder = [k for k in d if isinstance(k, str) and k.startswith("__") and k.endswith("__")]
                if dunder:
                    self._event("build-dunder", f"BUILD sets {', '.join(sorted(dunder)[:5])}", inst)
        if isinstance(inst, InertDict):
            if isinstance(state, dict):
                inst.attrs.update({k: v for k, v in state.items() if isinstance(k, str)})
                return
            if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], (dict, type(None))):
                inst.attrs.update({k: v for k, v in (state[0] or {}).items() if isinstance(k, str)})
                return
            raise self._error("BUILD on a dict with a state that is not a dict")
        if isinstance(inst, NumpyDType):
            if isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "="):
                inst.byteorder = state[1]
            return
        if isinstance(inst, TensorRef):
            # _rebuild_from_type_v2 / parameter state: Python attributes of a tensor; kept inert.
            return
        if isinstance(inst, UnknownCall):
            self._event("build-unknown", f"state set on {_type_name(inst)}", inst)
            inst.state.append(state)
            return
        if isinstance(inst, (UnknownGlobal, StandIn, Inert)):
            self._event("build-unknown", f"state set on {_type_name(inst)}", inst)
            return
        raise self._error(f"BUILD on a {_type_name(inst)}")

    def op_persid(self) -> None:
        try:
            pid = self._readline().decode("ascii")
        except UnicodeDecodeError:
            raise self._error("PERSID argument is not ASCII") from None
        self.stack.append(self._persistent(pid))

    def op_binpersid(self) -> None:
        self.stack.append(self._persistent(self._pop()))

    def _persistent(self, pid: Any) -> Any:
        trace = self.trace
        trace.persistent_ids += 1
        if trace.persistent_ids > self.limits.max_persistent_ids:
            raise self._limit(f"more than {self.limits.max_persistent_ids} persistent ids")
        position = self.op_pos + self.base
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            self._event("persid", "persistent id that is not a torch storage reference")
        if self.persistent_load is not None:
            return self.persistent_load(pid, position)
        return PersistentRef(pid, position)

    def op_next_buffer(self) -> None:
        self._event("next-buffer", "out-of-band buffer")
        if self.buffers is None:
            raise self._error("NEXT_BUFFER: the stream refers to out-of-band data and none was given")
        try:
            self.stack.append(next(self.buffers))
        except StopIteration:
            raise self._error("NEXT_BUFFER: not enough out-of-band buffers") from None

    def op_readonly_buffer(self) -> None:
        value = self._top()
        if isinstance(value, bytearray):
            self.stack[-1] = bytes(value)
        elif not isinstance(value, (bytes, memoryview)):
            raise self._error(f"READONLY_BUFFER on a {_type_name(value)}")


def _check_key_at(vm: PickleVM, key: Any, depth: int) -> None:
    if type(key) is str or type(key) is int:
        return
    try:
        _check_key(key, depth)
    except PickleVMError as exc:
        raise vm._error(exc.message) from None


_HANDLERS = {
    "MARK": PickleVM.op_mark, "STOP": PickleVM.op_stop, "POP": PickleVM.op_pop,
    "POP_MARK": PickleVM.op_pop_mark, "DUP": PickleVM.op_dup, "FLOAT": PickleVM.op_float,
    "INT": PickleVM.op_int, "BININT": PickleVM.op_binint, "BININT1": PickleVM.op_binint1,
    "LONG": PickleVM.op_long, "BININT2": PickleVM.op_binint2, "NONE": PickleVM.op_none,
    "PERSID": PickleVM.op_persid, "BINPERSID": PickleVM.op_binpersid, "REDUCE": PickleVM.op_reduce,
    "STRING": PickleVM.op_string, "BINSTRING": PickleVM.op_binstring,
    "SHORT_BINSTRING": PickleVM.op_short_binstring, "UNICODE": PickleVM.op_unicode,
    "BINUNICODE": PickleVM.op_binunicode, "APPEND": PickleVM.op_append, "BUILD": PickleVM.op_build,
    "GLOBAL": PickleVM.op_global, "DICT": PickleVM.op_dict, "EMPTY_DICT": PickleVM.op_empty_dict,
    "APPENDS": PickleVM.op_appends, "GET": PickleVM.op_get, "BINGET": PickleVM.op_binget,
    "INST": PickleVM.op_inst, "LONG_BINGET": PickleVM.op_long_binget, "LIST": PickleVM.op_list,
    "EMPTY_LIST": PickleVM.op_empty_list, "OBJ": PickleVM.op_obj, "PUT": PickleVM.op_put,
    "BINPUT": PickleVM.op_binput, "LONG_BINPUT": PickleVM.op_long_binput, "SETITEM": PickleVM.op_setitem,
    "TUPLE": PickleVM.op_tuple, "EMPTY_TUPLE": PickleVM.op_empty_tuple, "SETITEMS": PickleVM.op_setitems,
    "BINFLOAT": PickleVM.op_binfloat, "PROTO": PickleVM.op_proto, "NEWOBJ": PickleVM.op_newobj,
    "EXT1": PickleVM.op_ext1, "EXT2": PickleVM.op_ext2, "EXT4": PickleVM.op_ext4,
    "TUPLE1": PickleVM.op_tuple1, "TUPLE2": PickleVM.op_tuple2, "TUPLE3": PickleVM.op_tuple3,
    "NEWTRUE": PickleVM.op_newtrue, "NEWFALSE": PickleVM.op_newfalse, "LONG1": PickleVM.op_long1,
    "LONG4": PickleVM.op_long4, "BINBYTES": PickleVM.op_binbytes, "SHORT_BINBYTES": PickleVM.op_short_binbytes,
    "SHORT_BINUNICODE": PickleVM.op_short_binunicode, "BINUNICODE8": PickleVM.op_binunicode8,
    "BINBYTES8": PickleVM.op_binbytes8, "EMPTY_SET": PickleVM.op_empty_set, "ADDITEMS": PickleVM.op_additems,
    "FROZENSET": PickleVM.op_frozenset, "NEWOBJ_EX": PickleVM.op_newobj_ex,
    "STACK_GLOBAL": PickleVM.op_stack_global, "MEMOIZE": PickleVM.op_memoize, "FRAME": PickleVM.op_frame,
    "BYTEARRAY8": PickleVM.op_bytearray8, "NEXT_BUFFER": PickleVM.op_next_buffer,
    "READONLY_BUFFER": PickleVM.op_readonly_buffer,
}
_DISPATCH: list[Callable[[PickleVM], Any] | None] = [None] * 256
for _code, _name in OPCODE_NAMES.items():
    _DISPATCH[_code] = _HANDLERS[_name]
assert len(_HANDLERS) == len(OPCODE_NAMES) == 68


def run_pickle(data: Any, start: int = 0, **kwargs: Any) -> tuple[Any, Trace]:
    """Interpret one pickle; return ``(value, trace)``. Raises :class:`PickleVMError`."""
    vm = PickleVM(data, start, **kwargs)
    value = vm.run()
    return value, vm.trace

