"""The dtype table: one row per element type, shared by every reader and writer.

Ids are the safetensors dtype names (``F16``, ``BF16``...). Sizes are in bits because the
safetensors format also knows sub-byte types (``F4``, ``F6_*``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DType:
    id: str  #: safetensors name
    bits: int  #: bits per element
    kind: str  #: "float", "int", "uint", "bool", "complex"
    torch_name: str | None  #: attribute of the ``torch`` module (``float16``), None if torch has none
    storage_class: str | None  #: legacy typed storage class pickled by torch.save (``HalfStorage``)
    numpy_name: str | None  #: numpy dtype that holds the values exactly, None if numpy has none

    @property
    def itemsize(self) -> int:
        """Bytes per element (sub-byte types round up; use :func:`nbytes_for` for totals)."""
        return max(1, self.bits // 8)

    @property
    def is_float(self) -> bool:
        return self.kind in ("float", "complex")


_ROWS = [
    DType("BOOL", 8, "bool", "bool", "BoolStorage", "bool"),
    DType("U8", 8, "uint", "uint8", "ByteStorage", "uint8"),
    DType("I8", 8, "int", "int8", "CharStorage", "int8"),
    DType("I16", 16, "int", "int16", "ShortStorage", "int16"),
    DType("U16", 16, "uint", "uint16", "UInt16Storage", "uint16"),
    DType("I32", 32, "int", "int32", "IntStorage", "int32"),
    DType("U32", 32, "uint", "uint32", "UInt32Storage", "uint32"),
    DType("I64", 64, "int", "int64", "LongStorage", "int64"),
    DType("U64", 64, "uint", "uint64", "UInt64Storage", "uint64"),
    DType("F16", 16, "float", "float16", "HalfStorage", "float16"),
    DType("BF16", 16, "float", "bfloat16", "BFloat16Storage", None),
    DType("F32", 32, "float", "float32", "FloatStorage", "float32"),
    DType("F64", 64, "float", "float64", "DoubleStorage", "float64"),
    DType("C64", 64, "complex", "complex64", "ComplexFloatStorage", "complex64"),
    DType("F8_E4M3", 8, "float", "float8_e4m3fn", "Float8_e4m3fnStorage", None),
    DType("F8_E5M2", 8, "float", "float8_e5m2", "Float8_e5m2Storage", None),
    DType("F8_E4M3FNUZ", 8, "float", "float8_e4m3fnuz", "Float8_e4m3fnuzStorage", None),
    DType("F8_E5M2FNUZ", 8, "float", "float8_e5m2fnuz", "Float8_e5m2fnuzStorage", None),
    DType("F8_E8M0", 8, "float", "float8_e8m0fnu", "Float8_e8m0fnuStorage", None),
    DType("F6_E2M3", 6, "float", None, None, None),
    DType("F6_E3M2", 6, "float", None, None, None),
    DType("F4", 4, "float", None, None, None),
]

#: safetensors id -> row
DTYPES: dict[str, DType] = {row.id: row for row in _ROWS}
#: torch pickled storage class name (``HalfStorage``) -> row
BY_STORAGE_CLASS: dict[str, DType] = {row.storage_class: row for row in _ROWS if row.storage_class}
#: torch dtype attribute name (``float16``) -> row
BY_TORCH_NAME: dict[str, DType] = {row.torch_name: row for row in _ROWS if row.torch_name}
#: Extra torch dtype names that are aliases of the rows above
BY_TORCH_NAME.update(
    {"half": DTYPES["F16"], "float": DTYPES["F32"], "double": DTYPES["F64"], "long": DTYPES["I64"],
     "int": DTYPES["I32"], "short": DTYPES["I16"], "cfloat": DTYPES["C64"]}
)

#: ``--dtype`` spellings accepted on the command line -> safetensors id
CLI_DTYPES = {"fp16": "F16", "float16": "F16", "bf16": "BF16", "bfloat16": "BF16", "fp32": "F32", "float32": "F32"}
#: diffusers weight variant names (``*.fp16.safetensors``) that promise a dtype -> safetensors id
VARIANT_DTYPES = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}


def dtype(dtype_id: str) -> DType:
    """The row for a safetensors dtype id; ``KeyError`` names the unknown id."""
    try:
        return DTYPES[dtype_id]
    except KeyError:
        raise KeyError(f"unknown dtype {dtype_id!r}") from None


def nbytes_for(dtype_id: str, numel: int) -> int:
    """Bytes taken by ``numel`` elements (sub-byte types must fill whole bytes: caller checks)."""
    bits = DTYPES[dtype_id].bits * numel
    return (bits + 7) // 8
