"""The pickle allowlist: the exact ``(module, name)`` pairs a checkpoint pickle may name, each
mapped to a stand-in that builds an inert record (a :class:`TensorRef`, a :class:`StorageType`...).

This is the policy a security reviewer reads: nothing outside :data:`ALLOWLIST` is ever resolved,
imported or called (:mod:`.pickle_vm` turns every other name into an inert placeholder), and each
stand-in checks its arguments before building anything. The known-inert decoders added after the
allowlist (numpy scalars in training metadata) are decoded but still reported by the scanner.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from .dtypes import BY_STORAGE_CLASS, BY_TORCH_NAME
from .pickle_values import (
    DEFAULT_LIMITS,
    InertDict,
    NumpyDType,
    StandIn,
    StorageType,
    TensorRef,
    TorchDType,
    _BadArgs,
    _check_key,
)


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
