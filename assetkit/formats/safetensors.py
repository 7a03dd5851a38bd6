"""The safetensors format: a strict header reader and a problem collector (the streaming writer is
:mod:`assetkit.formats.safetensors_writer`, which shares the name and string rules defined here).

File layout: an 8-byte little-endian header length ``N``, ``N`` bytes of UTF-8 JSON (an object
mapping tensor names to ``{"dtype", "shape", "data_offsets"}`` plus an optional
``"__metadata__"`` object of strings), then the data section that the tensors tile exactly.

One parser enforces every rule. It reports each problem to a :class:`_Problems` sink:
:func:`read_safetensors` uses a strict sink that raises :class:`FormatError` at the first
problem, :func:`check_safetensors` a collecting sink that returns every problem as a
:class:`Finding`. Only the length field and the header are read, never tensor data.

We are stricter than the reference implementation, which accepts a header with leading
whitespace, silently keeps the last of duplicate JSON keys and ignores unknown entry fields.
"""

from __future__ import annotations

import json
import os
import struct
from collections import Counter
from math import prod
from pathlib import Path
from typing import Any

from ..errors import AssetkitError, FormatError
from ..findings import Finding, truncated
from .base import Asset, TensorInfo
from .dtypes import DTYPES
from .sniff import HEADER_CAP  # the one definition, shared with sniffing

__all__ = [
    "HEADER_CAP",
    "METADATA_KEY",
    "check_safetensors",
    "name_problem",
    "read_safetensors",
]

METADATA_KEY = "__metadata__"
_ENTRY_FIELDS = ("dtype", "shape", "data_offsets")
_ENTRY_KEYS = frozenset(_ENTRY_FIELDS)
_BITS: dict[str, int] = {row.id: row.bits for row in DTYPES.values()}
_KNOWN_DTYPES = ", ".join(DTYPES)
_WHITESPACE = frozenset(b" \t\r\n")
_U64_BITS = 2**64 * 8  #: a byte count that does not fit in 64 bits, in bits
#: check_safetensors stops listing problems after this many (a summary finding says how many more).
MAX_FINDINGS = 200


# ---------------------------------------------------------------------------------------------
# Problem sinks
# ---------------------------------------------------------------------------------------------
class _Problems:
    """Where the parser reports problems: raise at the first (strict) or collect them all."""

    def __init__(self, where: str, strict: bool) -> None:
        self.where = where
        self.strict = strict
        self.findings: list[Finding] = []
        self.suppressed = 0

    def add(self, code: str, message: str, tensor: str | None = None) -> None:
        if self.strict:
            raise FormatError(message, where=self.where, code=code)
        if len(self.findings) >= MAX_FINDINGS:
            self.suppressed += 1
            return
        where = self.where if tensor is None else f"{self.where}:{tensor}"
        self.findings.append(Finding(code, "error", message, where))

    def result(self) -> list[Finding]:
        if self.suppressed:
            self.findings.append(Finding(
                "st-more-problems", "error",
                f"{self.suppressed} more problems not listed (stopped after {MAX_FINDINGS})", self.where))
        return self.findings


# ---------------------------------------------------------------------------------------------
# Small helpers for messages
# ---------------------------------------------------------------------------------------------
def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _show(value: Any, limit: int = 60) -> str:
    """A short JSON rendering of ``value`` for messages."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return truncated(text, limit)


def quote_name(name: str) -> str:
    """A tensor name quoted for a message (escapes control characters, shortens absurd names)."""
    return _show(name, 120)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a tensor name, or None when it is fine.

    Empty names, control characters (they break every text report) and lone surrogates (not
    encodable as UTF-8) are refused.
    """
    if not name:
        return "tensor name is empty"
    if not name.isprintable():
        for char in name:
            code = ord(char)
            if code < 0x20 or 0x7F <= code < 0xA0:
                return f"tensor name {quote_name(name)} contains control character U+{code:04X}"
            if 0xD800 <= code < 0xE000:
                return f"tensor name {quote_name(name)} contains a lone surrogate U+{code:04X} (not valid Unicode)"
    return None


def string_problem(text: str) -> str | None:
    """Lone surrogates (JSON ``\\ud800`` escapes) make a string unencodable as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate U+{ord(text[exc.start]):04X} (not valid Unicode)"
    return None


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


# ---------------------------------------------------------------------------------------------
# The parser (one implementation of every rule)
# ---------------------------------------------------------------------------------------------
def _read_header(path: Path, problems: _Problems) -> tuple[bytes, int] | None:
    """Read the length field and the raw header bytes; None after a reported problem."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            if size < 8 or len(prefix) < 8:
                problems.add("st-truncated",
                             f"file is {len(prefix)} bytes, too short for the 8-byte header length")
                return None
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len < 2:
                problems.add("st-header-length",
                             f"header length is {header_len} bytes; the smallest header, '{{}}', takes 2")
                return None
            if header_len > HEADER_CAP:
                problems.add("st-header-too-large",
                             f"header length {header_len:,} bytes exceeds the format's cap of "
                             f"{HEADER_CAP:,} bytes")
                return None
            if header_len > size - 8:
                problems.add("st-header-past-eof",
                             f"header length {header_len:,} bytes runs past the end of the file "
                             f"(only {size - 8:,} bytes follow the length field)")
                return None
            raw = fh.read(header_len)
    except OSError as exc:
        raise AssetkitError(f"cannot read: {exc.strerror or exc}", where=str(path)) from None
    if len(raw) != header_len:
        problems.add("st-truncated", f"file ended after {len(raw)} of {header_len} header bytes")
        return None
    return raw, size


def _decode_header(raw: bytes, problems: _Problems) -> tuple[Any, list[tuple[dict, Counter]]] | None:
    """UTF-8 and JSON decoding; returns the value and the objects that had duplicate keys."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add("st-header-utf8",
                     f"header is not valid UTF-8: byte 0x{raw[exc.start]:02x} at header byte "
                     f"{exc.start} ({exc.reason})")
        return None
    duplicates: list[tuple[dict, Counter]] = []

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            duplicates.append((obj, Counter(key for key, _ in pairs)))
        return obj

    try:
        value = json.loads(text, object_pairs_hook=keep_pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        problems.add("st-header-json", f"header is not valid JSON: {exc.msg} at character {exc.pos}")
        return None
    except RecursionError:
        problems.add("st-header-json", "header is not valid JSON for safetensors: nesting too deep")
        return None
    except ValueError as exc:  # NaN/Infinity, integers beyond Python's digit limit
        problems.add("st-header-json", f"header is not valid JSON: {exc}")
        return None
    return value, duplicates


def _tensor_info(name: str, dtype: str, shape: tuple[int, ...], file: Path, data_offset: int,
                 storage_nbytes: int) -> TensorInfo:
    """A :class:`TensorInfo` for a safetensors tensor (its own storage, keyed by its name)."""
    return TensorInfo(name, dtype, shape, file, data_offset, storage_key=name, storage_nbytes=storage_nbytes)


def _numel_within(shape: list[int], limit: int) -> int | None:
    """Product of ``shape``, or None as soon as it exceeds ``limit`` (bounded work on absurd dims)."""
    if 0 in shape:
        return 0
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > limit:
            return None
    return numel


def _parse(path: Path, problems: _Problems) -> tuple[list[TensorInfo], dict[str, str]] | None:
    """Apply every rule, reporting each problem to ``problems``.

    With the strict sink (which raises at the first problem) returns the tensors in data order
    and the metadata; with a collecting sink returns None (the findings are the result).
    """
    read = _read_header(path, problems)
    if read is None:
        return None
    raw, file_size = read
    decoded = _decode_header(raw, problems)
    if decoded is None:
        return None
    header, duplicates = decoded
    if type(header) is not dict:
        problems.add("st-header-not-object", f"header must be a JSON object, got {_json_type(header)}")
        return None
    if raw[0] != 0x7B:  # "{"
        if raw[0] in _WHITESPACE:
            problems.add("st-header-start",
                         "header starts with whitespace before '{' (the reference implementation "
                         "tolerates it, assetkit does not)")
        else:
            problems.add("st-header-start", f"header does not start with '{{' but with byte 0x{raw[0]:02x}")

    has_metadata = METADATA_KEY in header
    metadata_value = header.pop(METADATA_KEY, None)
    _check_duplicates(header, metadata_value, duplicates, problems)
    metadata = _check_metadata(metadata_value, has_metadata, problems)

    data_size = file_size - 8 - len(raw)
    data_start = 8 + len(raw)
    bits_budget = data_size * 8
    strict = problems.strict
    layout: list[tuple[int, int, str, str, tuple[int, ...]]] = []
    layout_complete = True
    bits_of = _BITS.get

    for name, entry in header.items():
        if not name or not name.isprintable():
            problem = name_problem(name)
            if problem:
                problems.add("st-name", problem, name)
        # Fast path: a well-formed entry costs a handful of type checks.
        if (type(entry) is not dict or entry.keys() != _ENTRY_KEYS) and not _check_entry_fields(
                name, entry, problems):
            layout_complete = False
            continue
        dtype = entry["dtype"]
        shape = entry["shape"]
        offsets = entry["data_offsets"]
        bits = bits_of(dtype) if type(dtype) is str else None
        if bits is None:
            problems.add("st-dtype",
                         f"tensor {quote_name(name)}: unknown dtype {_show(dtype)} (expected one of {_KNOWN_DTYPES})",
                         name)
        shape_ok = type(shape) is list and all(type(dim) is int and dim >= 0 for dim in shape)
        if not shape_ok:
            _report_shape(name, shape, problems)
        if (type(offsets) is list and len(offsets) == 2 and type(offsets[0]) is int
                and type(offsets[1]) is int and 0 <= offsets[0] <= offsets[1]):
            begin, end = offsets
        else:
            _report_offsets(name, offsets, problems)
            layout_complete = False
            continue
        if bits is not None and shape_ok:
            # Up to 8 dims the exact product is cheap even for absurd values; beyond, stop early.
            numel = prod(shape) if len(shape) <= 8 else _numel_within(shape, bits_budget // bits)
            if numel is None or numel * bits != (end - begin) * 8:
                _report_size(name, dtype, bits, shape, numel, (begin, end), data_size, problems)
        layout.append((begin, end, name, dtype, tuple(shape) if strict else ()))

    _check_layout(layout, layout_complete, data_size, problems)
    if not strict:
        return None
    make = _tensor_info
    tensors = [make(name, dtype, shape, path, data_start + begin, end - begin)
               for begin, end, name, dtype, shape in layout]
    return tensors, metadata


def _check_duplicates(header: dict, metadata: Any, duplicates: list[tuple[dict, Counter]],
                      problems: _Problems) -> None:
    owners: dict[int, str] | None = None  # entry object -> tensor name, built only when needed
    for obj, counts in duplicates:
        repeated = [(key, n) for key, n in counts.items() if n > 1]
        for key, n in repeated:
            if obj is header and key == METADATA_KEY:
                problems.add("st-duplicate-name", f"__metadata__ appears {n} times in the header")
            elif obj is header:
                problems.add("st-duplicate-name",
                             f"duplicate tensor name {quote_name(key)}: the header defines it {n} times "
                             f"(other readers silently keep the last)", key)
            elif obj is metadata:
                problems.add("st-duplicate-metadata-key",
                             f"duplicate __metadata__ key {quote_name(key)}: defined {n} times")
            else:
                if owners is None:
                    owners = {id(entry): name for name, entry in header.items()}
                owner = owners.get(id(obj))
                if owner is not None:
                    problems.add("st-duplicate-field",
                                 f"tensor {quote_name(owner)}: duplicate field {quote_name(key)} ({n} times)", owner)
                else:
                    problems.add("st-duplicate-key", f"duplicate JSON key {quote_name(key)} in a nested object")


def _check_metadata(value: Any, present: bool, problems: _Problems) -> dict[str, str]:
    if value is None:
        if present:
            problems.add("st-metadata", "__metadata__ must be an object of string to string, got null")
        return {}
    if type(value) is not dict:
        problems.add("st-metadata", f"__metadata__ must be an object of string to string, got {_json_type(value)}")
        return {}
    if value.keys() >= _ENTRY_KEYS:
        problems.add("st-metadata",
                     "__metadata__ holds dtype/shape/data_offsets: a tensor cannot be named '__metadata__'")
        return {}
    for key, item in value.items():
        if type(item) is not str:
            problems.add("st-metadata",
                         f"__metadata__[{quote_name(key)}] must be a string, got {_json_type(item)} {_show(item)}")
            continue
        for text, what in ((key, "key"), (item, "value")):
            problem = string_problem(text)
            if problem:
                problems.add("st-metadata", f"__metadata__ {what} {quote_name(text)} {problem}")
    return value


def _check_entry_fields(name: str, entry: Any, problems: _Problems) -> bool:
    """Report a badly shaped entry; True when all three fields are there to check further."""
    hint = ""
    if name.startswith("__") and name.endswith("__"):
        hint = " (only '__metadata__' may hold metadata)"
    if type(entry) is not dict:
        problems.add("st-entry",
                     f"tensor {quote_name(name)}: entry must be an object with dtype, shape and data_offsets, "
                     f"got {_json_type(entry)}{hint}", name)
        return False
    missing = [key for key in _ENTRY_FIELDS if key not in entry]
    extra = sorted(key for key in entry if key not in _ENTRY_KEYS)
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if extra:
        parts.append("unexpected " + ", ".join(quote_name(key) for key in extra))
    problems.add("st-entry",
                 f"tensor {quote_name(name)}: entry must have exactly dtype, shape and data_offsets: "
                 f"{'; '.join(parts)}{hint}", name)
    return not missing


def _report_shape(name: str, shape: Any, problems: _Problems) -> None:
    if type(shape) is not list:
        problems.add("st-shape",
                     f"tensor {quote_name(name)}: shape must be an array of non-negative integers, "
                     f"got {_json_type(shape)} {_show(shape)}", name)
        return
    for index, dim in enumerate(shape):
        if type(dim) is not int:
            problems.add("st-shape",
                         f"tensor {quote_name(name)}: shape {_show(shape)} has {_json_type(dim)} {_show(dim)} at "
                         f"position {index}, expected a non-negative integer", name)
            return
        if dim < 0:
            problems.add("st-shape",
                         f"tensor {quote_name(name)}: shape {_show(shape)} has negative dimension {dim} at "
                         f"position {index}", name)
            return


def _report_size(name: str, dtype: str, bits: int, shape: list[int], numel: int | None,
                 offsets: tuple[int, int], data_size: int, problems: _Problems) -> None:
    begin, end = offsets
    if numel is None:
        problems.add("st-numel-overflow",
                     f"tensor {quote_name(name)}: shape {_show(shape)} of {dtype} needs more bytes than the whole "
                     f"data section holds ({data_size:,} bytes)", name)
        return
    if numel * bits >= _U64_BITS:
        problems.add("st-numel-overflow",
                     f"tensor {quote_name(name)}: shape {_show(shape)} of {dtype} overflows: its byte size does not "
                     f"fit in 64 bits (data_offsets [{begin}, {end}])", name)
        return
    nbits = numel * bits
    if nbits % 8:
        problems.add("st-subbyte",
                     f"tensor {quote_name(name)}: {numel} elements of {dtype} ({bits} bits each) make {nbits} bits, "
                     f"not a whole number of bytes", name)
        return
    problems.add("st-size-mismatch",
                 f"tensor {quote_name(name)}: {dtype} shape {_show(shape)} needs {nbits // 8:,} bytes ({numel:,} "
                 f"elements x {bits} bits) but data_offsets [{begin}, {end}] span {end - begin:,} bytes", name)


def _report_offsets(name: str, offsets: Any, problems: _Problems) -> None:
    prefix = f"tensor {quote_name(name)}: data_offsets"
    if type(offsets) is not list:
        problems.add("st-offsets", f"{prefix} must be [begin, end], got {_json_type(offsets)} {_show(offsets)}", name)
    elif len(offsets) != 2:
        problems.add("st-offsets", f"{prefix} must be [begin, end], got {len(offsets)} values {_show(offsets)}",
                     name)
    elif not all(type(value) is int and value >= 0 for value in offsets):
        problems.add("st-offsets", f"{prefix} {_show(offsets)} must be two non-negative integers", name)
    else:
        problems.add("st-offsets",
                     f"{prefix} begin {offsets[0]} is after end {offsets[1]}", name)


def _check_layout(layout: list[tuple[int, int, str, str, tuple[int, ...]]], complete: bool, data_size: int,
                  problems: _Problems) -> None:
    """Tensors must tile the data section: sorted by offsets, from 0, no gap, no overlap, no excess."""
    layout.sort()  # by (begin, end); names are unique, so ties never compare further
    covered = 0
    last: tuple[int, int, str] | None = None
    for begin, end, name, _, _ in layout:
        if begin > covered:
            if complete and last is None:
                problems.add("st-offsets-start",
                             f"tensor {quote_name(name)} starts at data offset {begin:,}, but the data must start "
                             f"at 0: bytes [0, {begin:,}) belong to no tensor", name)
            elif complete and last is not None:
                problems.add("st-offsets-gap",
                             f"gap: data bytes [{covered:,}, {begin:,}) between tensor {quote_name(last[2])} and "
                             f"tensor {quote_name(name)} belong to no tensor", name)
        elif begin < covered and last is not None:
            problems.add("st-offsets-overlap",
                         f"tensor {quote_name(name)} at [{begin:,}, {end:,}) overlaps tensor {quote_name(last[2])} at "
                         f"[{last[0]:,}, {last[1]:,})", name)
        if end >= covered:
            covered = end
            last = (begin, end, name)
    if covered > data_size:
        assert last is not None
        problems.add("st-data-short",
                     f"data section is short: tensor {quote_name(last[2])} ends at data offset {covered:,} but the "
                     f"file holds only {data_size:,} data bytes (truncated?)", last[2])
    elif complete and covered < data_size:
        if last is None:
            problems.add("st-trailing-bytes",
                         f"{data_size:,} trailing bytes after the header but the header lists no tensors")
        else:
            problems.add("st-trailing-bytes",
                         f"{data_size - covered:,} trailing bytes after the last tensor: tensors cover "
                         f"[0, {covered:,}) of the {data_size:,}-byte data section")


# ---------------------------------------------------------------------------------------------
# Public reading API
# ---------------------------------------------------------------------------------------------
def read_safetensors(path: str | os.PathLike[str]) -> Asset:
    """Open a safetensors file lazily (header only), enforcing every rule of the format.

    Raises :class:`FormatError` (code ``st-...``) at the first violation, and
    :class:`AssetkitError` when the file cannot be read at all.
    """
    path = Path(path)
    parsed = _parse(path, _Problems(str(path), strict=True))
    assert parsed is not None  # the strict sink raises instead of returning nothing
    tensors, metadata = parsed
    return Asset(
        path=path,
        format="safetensors",
        tensors={info.name: info for info in tensors},
        metadata=dict(metadata),
        files=[path],
    )


def check_safetensors(path: str | os.PathLike[str]) -> list[Finding]:
    """Every problem the file has (severity ``error``, codes ``st-...``); empty when valid.

    ``where`` is the file, or ``file:tensor`` for a problem of one tensor. Raises
    :class:`AssetkitError` only when the file cannot be read at all.
    """
    path = Path(path)
    problems = _Problems(str(path), strict=False)
    _parse(path, problems)
    return problems.result()
