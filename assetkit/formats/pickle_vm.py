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
from typing import Any

from .pickle_allowlist import (  # noqa: F401 - re-exported: importable from pickle_vm as before
    ALLOWLIST,
    STANDINS,
)
from .pickle_values import (  # noqa: F401 - re-exported: importable from pickle_vm as before
    DEFAULT_LIMITS,
    GlobalRef,
    Inert,
    InertDict,
    Limits,
    NumpyDType,
    PersistentRef,
    PickleLimitError,
    PickleVMError,
    StandIn,
    StorageType,
    TensorRef,
    TorchDType,
    Trace,
    TraceEvent,
    UnknownCall,
    UnknownGlobal,
    _BadArgs,
    _check_key,
)

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

