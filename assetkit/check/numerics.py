"""``validate --numerics``: NaN, Inf, all-zero tensors and mixed float dtypes, streamed.

Tensors are read one at a time through :meth:`Asset.tensor_array` (a view of the memory-mapped
file) and scanned in chunks, so the extra memory is a few chunk-sized temporaries whatever the
tensor size. numpy only. bf16 and fp8 are decoded from their bit patterns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import AssetkitError
from ..findings import Finding, capped
from ..formats.base import Asset
from ..formats.dtypes import DTYPES

__all__ = ["TensorStats", "check_numerics", "tensor_stats"]

#: Elements scanned per step; temporaries stay around 4 x this many bytes.
CHUNK_ELEMENTS = 1 << 22
#: Names listed in a finding's message before "(+N more)".
LIST_LIMIT = 5


@dataclass(frozen=True)
class TensorStats:
    nan: int
    inf: int
    all_zero: bool


def _as_float(chunk: np.ndarray, dtype_id: str) -> np.ndarray | None:
    """A float view/decoding of ``chunk`` that keeps NaN, Inf and zero, or None for bit-level types."""
    if dtype_id in ("F16", "F32", "F64"):
        return chunk
    if dtype_id == "C64":
        return chunk.view(np.float32)
    if dtype_id == "BF16":  # the upper half of a float32
        return (chunk.astype(np.uint32) << 16).view(np.float32)
    if dtype_id == "F8_E5M2":  # the upper byte of a float16
        return (chunk.astype(np.uint16) << 8).view(np.float16)
    return None


def _fp8_bits(chunk: np.ndarray, dtype_id: str) -> tuple[int, int, bool]:
    """(NaN count, Inf count, any non-zero) for fp8 types numpy has no float for."""
    if dtype_id == "F8_E4M3":  # e4m3fn: no Inf, NaN is S.1111.111
        magnitude = chunk & 0x7F
        return int(np.count_nonzero(magnitude == 0x7F)), 0, bool(np.any(magnitude))
    if dtype_id in ("F8_E4M3FNUZ", "F8_E5M2FNUZ"):  # no Inf, no -0: 0x80 is the only NaN
        nan = int(np.count_nonzero(chunk == 0x80))
        return nan, 0, bool(np.any(chunk != 0))
    if dtype_id == "F8_E8M0":  # exponent only: 0xFF is NaN, no zero
        return int(np.count_nonzero(chunk == 0xFF)), 0, True
    raise ValueError(dtype_id)


def tensor_stats(array: np.ndarray, dtype_id: str, chunk_elements: int = CHUNK_ELEMENTS) -> TensorStats | None:
    """NaN/Inf counts and all-zero for one float tensor; None for non-float or sub-byte dtypes."""
    row = DTYPES[dtype_id]
    if not row.is_float or row.bits < 8:
        return None
    flat = array.reshape(-1)
    nan = inf = 0
    nonzero = False
    for start in range(0, flat.size, chunk_elements):
        chunk = flat[start : start + chunk_elements]
        values = _as_float(chunk, dtype_id)
        if values is None:
            chunk_nan, chunk_inf, chunk_nonzero = _fp8_bits(chunk, dtype_id)
        else:
            finite = np.isfinite(values)
            if finite.all():  # the common case: one pass, no counting
                chunk_nan = chunk_inf = 0
            else:
                chunk_nan = int(np.count_nonzero(np.isnan(values)))
                chunk_inf = int(finite.size - np.count_nonzero(finite)) - chunk_nan
            # -0.0 counts as zero, NaN as non-zero; once a non-zero is seen, no need to look again
            chunk_nonzero = nonzero or bool(values.any())
        nan += chunk_nan
        inf += chunk_inf
        nonzero = nonzero or chunk_nonzero
    return TensorStats(nan=nan, inf=inf, all_zero=flat.size > 0 and not nonzero)


def check_numerics(asset: Asset, *, where: str = "", names: Iterable[str] | None = None) -> list[Finding]:
    """Findings for NaN/Inf (errors), all-zero tensors and mixed float dtypes (warnings).

    ``names`` restricts the check to some tensors of ``asset`` (default: all); ``where`` is put
    on every finding (a file or component name). Mixed float dtypes are judged over the tensors
    checked, so call this once per component.
    """
    nan_tensors: list[str] = []
    inf_tensors: list[str] = []
    zero_tensors: list[str] = []
    unreadable: list[str] = []
    skipped: list[str] = []
    nan_total = inf_total = 0
    float_dtypes: Counter[str] = Counter()
    for name in list(names) if names is not None else list(asset.tensors):
        info = asset.tensors[name]
        row = DTYPES[info.dtype]
        if not row.is_float:
            continue
        float_dtypes[info.dtype] += 1
        if row.bits < 8:
            skipped.append(name)
            continue
        if info.numel == 0:
            continue
        try:
            stats = tensor_stats(asset.tensor_array(name), info.dtype)
        except AssetkitError as exc:
            unreadable.append(f"{name} ({exc.message})")
            continue
        if stats is None:
            continue
        if stats.nan:
            nan_tensors.append(name)
            nan_total += stats.nan
        if stats.inf:
            inf_tensors.append(name)
            inf_total += stats.inf
        if stats.all_zero:
            zero_tensors.append(name)

    findings: list[Finding] = []
    if nan_tensors:
        findings.append(Finding("numerics-nan", "error",
                                f"{len(nan_tensors)} tensor(s) hold NaN ({nan_total} value(s)): {capped(nan_tensors, LIST_LIMIT)}",
                                where))
    if inf_tensors:
        findings.append(Finding("numerics-inf", "error",
                                f"{len(inf_tensors)} tensor(s) hold Inf ({inf_total} value(s)): {capped(inf_tensors, LIST_LIMIT)}",
                                where))
    if zero_tensors:
        findings.append(Finding("numerics-all-zero", "warning",
                                f"{len(zero_tensors)} float tensor(s) are all zeros: {capped(zero_tensors, LIST_LIMIT)}", where))
    if len(float_dtypes) > 1:
        mix = ", ".join(f"{dtype} ({count} tensors)" for dtype, count in float_dtypes.most_common())
        findings.append(Finding("numerics-mixed-dtypes", "warning", f"mixed float dtypes: {mix}", where))
    if unreadable:
        findings.append(Finding("numerics-unreadable", "error",
                                f"{len(unreadable)} tensor(s) could not be read: {capped(unreadable, LIST_LIMIT)}", where))
    if skipped:
        findings.append(Finding("numerics-skipped", "info",
                                f"{len(skipped)} sub-byte float tensor(s) not checked: {capped(skipped, LIST_LIMIT)}", where))
    return findings
