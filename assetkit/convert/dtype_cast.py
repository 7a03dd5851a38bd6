"""Precision changes of raw tensor bytes, numpy only, bit-identical to torch's ``.to(dtype)``.

Only the IEEE-style floating types ``F16``, ``BF16``, ``F32`` and ``F64`` are cast; every other
dtype (integers, bool, fp8, complex) keeps its type (``position_ids`` stay ``I64``).

Rounding follows torch exactly:

* F32 -> F16: IEEE round-to-nearest-even, overflow to +-inf, subnormals kept (numpy ``astype``).
* F32 -> BF16: round-to-nearest-even on the upper 16 bits (integer ops on ``uint32``).
* F16/BF16 -> F32 and F32 -> F64: exact widening.
* F64 -> F16/BF16 and F16 <-> BF16 go through F32, as torch does (so F64 -> F16 rounds twice,
  exactly like ``torch.Tensor.to``).

NaN stays NaN. torch's own NaN *bit patterns* depend on which kernel runs (its vectorised
F32 -> BF16 path writes ``0xFFFF``, the scalar one ``0x7FC0``); we write the hardware rule
(x86 F16C ``vcvtps2ph`` and AVX512-BF16 ``vcvtneps2bf16``): a quiet NaN that keeps its sign and
its leading payload bits. Widening keeps NaN bits exactly (payload shifted, nothing quietened).

All functions take and return little-endian bytes (anything supporting the buffer protocol) and
work element-wise, so callers may cast a large tensor in element-aligned chunks.
"""

from __future__ import annotations

import functools

import numpy as np

from ..formats.dtypes import DTYPES

#: dtypes that ``--dtype`` converts; everything else keeps its dtype.
CASTABLE = frozenset({"F16", "BF16", "F32", "F64"})



def output_dtype(src_dtype: str, target: str | None) -> str:
    """The dtype a tensor of ``src_dtype`` gets when ``--dtype target`` is asked (None: unchanged)."""
    if target is None or src_dtype not in CASTABLE:
        return src_dtype
    if target not in CASTABLE:
        raise ValueError(f"cannot cast to {target!r}: only {sorted(CASTABLE)} are supported")
    return target


#: Elements cast per step: small enough for the temporaries to stay in cache and memory flat.
BLOCK_ELEMENTS = 1 << 20
_NUMPY = {"F16": "<f2", "BF16": "<u2", "F32": "<f4", "F64": "<f8"}


def cast_bytes(data: bytes | bytearray | memoryview, src_dtype: str, dst_dtype: str) -> memoryview:
    """Cast raw little-endian elements from ``src_dtype`` to ``dst_dtype`` (both in :data:`CASTABLE`).

    Returns a byte-format memoryview (of the input itself when the dtypes are equal). ``len(data)``
    must be a whole number of ``src_dtype`` elements. Works block by block
    (:data:`BLOCK_ELEMENTS`), so the only large allocation is the result.
    """
    if src_dtype == dst_dtype:
        return memoryview(data).cast("B")
    for dtype_id in (src_dtype, dst_dtype):
        if dtype_id not in CASTABLE:
            raise ValueError(f"cannot cast {src_dtype} to {dst_dtype}: {dtype_id} is not a castable float")
    itemsize = DTYPES[src_dtype].itemsize
    raw = memoryview(data).cast("B")
    if len(raw) % itemsize:
        raise ValueError(f"{len(raw)} bytes is not a whole number of {src_dtype} elements")
    count = len(raw) // itemsize
    if itemsize == 2 and dst_dtype != "F64":
        # 16-bit sources: one lookup in a table of all 65536 results (built by the block path).
        return memoryview(np.take(_table(src_dtype, dst_dtype), np.frombuffer(raw, dtype="<u2"))).cast("B")
    out = np.empty(count, dtype=_NUMPY[dst_dtype])
    for first in range(0, count, BLOCK_ELEMENTS):
        last = min(count, first + BLOCK_ELEMENTS)
        out[first:last] = _cast_block(raw[first * itemsize: last * itemsize], src_dtype, dst_dtype)
    return memoryview(out).cast("B")


@functools.cache
def _table(src_dtype: str, dst_dtype: str) -> np.ndarray:
    """Every 16-bit pattern of ``src_dtype`` cast to ``dst_dtype`` (bits, as unsigned ints)."""
    every = np.arange(1 << 16, dtype="<u2")
    table = _cast_block(memoryview(every).cast("B"), src_dtype, dst_dtype)
    table = np.ascontiguousarray(table).view(f"<u{DTYPES[dst_dtype].itemsize}")
    table.setflags(write=False)
    return table


def _cast_block(raw: memoryview, src_dtype: str, dst_dtype: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # inf on overflow is the IEEE result, as in torch
        if {src_dtype, dst_dtype} == {"F32", "F64"}:
            return np.frombuffer(raw, dtype=_NUMPY[src_dtype]).astype(_NUMPY[dst_dtype])
        return _from_f32(_to_f32(raw, src_dtype), dst_dtype, src_dtype)


def _to_f32(raw: memoryview, src_dtype: str) -> np.ndarray:
    """Exact widening (or, from F64, one IEEE rounding) to a float32 array."""
    if src_dtype == "F32":
        return np.frombuffer(raw, dtype="<f4")
    if src_dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype("<f4")
    if src_dtype == "BF16":
        widened = np.frombuffer(raw, dtype="<u2").astype("<u4")
        widened <<= 16
        return widened.view("<f4")
    if src_dtype == "F64":
        return np.frombuffer(raw, dtype="<f8").astype("<f4")
    raise AssertionError(src_dtype)


def _from_f32(values: np.ndarray, dst_dtype: str, src_dtype: str = "F32") -> np.ndarray:
    if dst_dtype == "F32":
        return values
    if dst_dtype == "F64":
        return values.astype("<f8")  # exact; signalling NaNs are quietened, as in hardware
    nan = np.isnan(values)
    bits = values.view("<u4")
    if dst_dtype == "F16":
        out = values.astype("<f2")
        if nan.any():
            # numpy keeps signalling NaNs signalling; the hardware (and torch) quietens them.
            nan_bits = bits[nan]
            fixed = ((nan_bits >> 16) & 0x8000) | 0x7E00 | ((nan_bits >> 13) & 0x03FF)
            out.view("<u2")[nan] = fixed.astype("<u2")
        return out
    if dst_dtype == "BF16":
        rounded = bits >> 16  # round to nearest even: add 0x7FFF + the lowest kept bit, keep the top half
        rounded &= 1
        rounded += 0x7FFF
        rounded += bits
        rounded >>= 16
        out = rounded.astype("<u2")
        # What torch's CPU casts write for any NaN, whatever its sign and payload: 0xFFFF from
        # float32/float64 (the vectorised cast), 0x7FC0 from float16 (README, "--dtype and NaN").
        out[nan] = 0x7FC0 if src_dtype == "F16" else 0xFFFF
        return out
    raise AssertionError(dst_dtype)
