"""What the pickle interpreter works with and reports: its errors and limits, the trace the
scanner judges, and the inert values a pickle can build (never a real object of the stream's
choosing). Split out of :mod:`.pickle_vm`, which re-exports every name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError


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
