"""Malformed safetensors files, each built from bytes: rejected by the reader, reported by the check.

Every case names the rule it breaks; the reader must raise :class:`FormatError` with that
``st-...`` code and a message naming the problem, and ``check_safetensors`` must report it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from assetkit.errors import FormatError
from assetkit.formats.safetensors import check_safetensors, read_safetensors


def pack(header: str | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """8-byte little-endian length + header + data; ``length`` overrides the length field."""
    raw = header.encode("utf-8") if isinstance(header, str) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def entry(dtype: str = "F32", shape: list | object = (2,), offsets: list | object = (0, 8)) -> dict:
    return {
        "dtype": dtype,
        "shape": list(shape) if isinstance(shape, tuple) else shape,
        "data_offsets": list(offsets) if isinstance(offsets, tuple) else offsets,
    }


def tensors(entries: dict, data_len: int, metadata: object = None) -> bytes:
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    header.update(entries)
    return pack(json.dumps(header), bytes(data_len))


VALID = tensors({"a": entry("F32", (2,), (0, 8)), "b": entry("F16", (2, 2), (8, 16))}, 16)


@dataclass
class Case:
    id: str
    content: bytes
    code: str
    words: tuple[str, ...]  #: each must appear in the message (case-insensitive)


CASES = [
    Case("empty-file", b"", "st-truncated", ("too short",)),
    Case("truncated-length-field", b"\x10\x00\x00", "st-truncated", ("3 bytes", "too short")),
    Case("header-length-0", pack(b"", b"{}"), "st-header-length", ("0 bytes",)),
    Case("header-length-1", pack(b"{", b"}"), "st-header-length", ("1 bytes",)),
    Case("header-length-huge", pack(b"{}", length=10**18), "st-header-too-large", ("cap",)),
    Case("header-over-100mb-cap", pack(b"{}", length=100_000_001), "st-header-too-large",
         ("100,000,001", "100,000,000")),
    Case("header-length-past-eof", pack(b'{"a": 1}', length=4096), "st-header-past-eof",
         ("past the end", "4,096")),
    Case("file-cut-inside-header", VALID[:40], "st-header-past-eof", ("past the end",)),
    Case("file-cut-inside-data", VALID[:-5], "st-data-short", ("short", '"b"', "16")),
    Case("invalid-utf8", pack(b'{"a\xff": {}}'), "st-header-utf8", ("utf-8", "0xff")),
    Case("invalid-json", pack(b'{"a": {"dtype": "F32",}}'), "st-header-json", ("not valid json",)),
    Case("json-nan", pack(b'{"a": NaN}'), "st-header-json", ("nan",)),
    Case("json-deep-nesting", pack(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "st-header-json",
         ("nesting",)),
    Case("json-utf8-bom", pack("\ufeff{}"), "st-header-json", ("bom",)),
    Case("json-array", pack(b'[{"dtype": "F32"}]'), "st-header-not-object", ("object", "array")),
    Case("json-string", pack(b'"tensors"'), "st-header-not-object", ("object", "string")),
    Case("leading-space", pack(b' {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
         "st-header-start", ("whitespace", "'{'")),
    Case("leading-newline", pack(b'\n{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
         "st-header-start", ("whitespace",)),
    Case("duplicate-tensor-name",
         pack(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
              b'"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
         "st-duplicate-name", ("duplicate", '"a"', "2 times")),
    Case("duplicate-entry-field",
         pack(b'{"a":{"dtype":"F16","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
         "st-duplicate-field", ("duplicate", "dtype")),
    Case("duplicate-metadata-key",
         pack(b'{"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
              bytes(8)),
         "st-duplicate-metadata-key", ("duplicate", '"k"')),
    Case("unknown-dtype", tensors({"w": entry("F31", (2,), (0, 8))}, 8), "st-dtype", ("unknown dtype", "F31")),
    Case("lowercase-dtype", tensors({"w": entry("f32", (2,), (0, 8))}, 8), "st-dtype", ("unknown dtype", "f32")),
    Case("dtype-not-a-string", tensors({"w": entry(4, (2,), (0, 8))}, 8), "st-dtype", ("unknown dtype",)),
    Case("negative-dim", tensors({"w": entry("F32", [-2], (0, 8))}, 8), "st-shape", ("negative", "-2")),
    Case("float-dim", tensors({"w": entry("F32", [2.0], (0, 8))}, 8), "st-shape", ("2.0", "integer")),
    Case("bool-dim", tensors({"w": entry("F32", [True, 2], (0, 8))}, 8), "st-shape", ("boolean", "true")),
    Case("string-dim", tensors({"w": entry("F32", ["2"], (0, 8))}, 8), "st-shape", ("string",)),
    Case("shape-not-a-list", tensors({"w": entry("F32", 2, (0, 8))}, 8), "st-shape", ("array", "integer 2")),
    Case("offsets-three-values", tensors({"w": entry("F32", (2,), [0, 4, 8])}, 8), "st-offsets",
         ("[begin, end]", "3 values")),
    Case("offsets-not-a-list", tensors({"w": entry("F32", (2,), {"begin": 0})}, 8), "st-offsets",
         ("[begin, end]", "object")),
    Case("offsets-begin-after-end", tensors({"w": entry("F32", (0,), (8, 0))}, 8), "st-offsets",
         ("begin 8 is after end 0",)),
    Case("offsets-negative", tensors({"w": entry("F32", (2,), (-8, 0))}, 8), "st-offsets", ("non-negative",)),
    Case("offsets-float", tensors({"w": entry("F32", (2,), (0, 8.0))}, 8), "st-offsets", ("non-negative",)),
    Case("gap-between-tensors",
         tensors({"a": entry("F32", (2,), (0, 8)), "b": entry("F32", (2,), (12, 20))}, 20),
         "st-offsets-gap", ("gap", "[8, 12)", '"a"', '"b"')),
    Case("overlapping-tensors",
         tensors({"a": entry("F32", (2,), (0, 8)), "b": entry("F32", (2,), (4, 12))}, 12),
         "st-offsets-overlap", ("overlaps", '"a"', '"b"', "[4, 12)")),
    Case("zero-size-tensor-inside-another",
         tensors({"a": entry("F32", (2,), (0, 8)), "e": entry("F32", (0,), (4, 4))}, 8),
         "st-offsets-overlap", ("overlaps", '"e"')),
    Case("not-starting-at-zero", tensors({"a": entry("F32", (2,), (4, 12))}, 12),
         "st-offsets-start", ("start at 0", "[0, 4)")),
    Case("size-mismatch", tensors({"a": entry("F32", (2, 3), (0, 20))}, 20), "st-size-mismatch",
         ("needs 24 bytes", "span 20 bytes", '"a"')),
    Case("size-mismatch-dtype-width", tensors({"a": entry("F16", (4,), (0, 16))}, 16), "st-size-mismatch",
         ("needs 8 bytes", "F16")),
    Case("sub-byte-dtype-half-byte", tensors({"a": entry("F4", (3,), (0, 2))}, 2), "st-subbyte",
         ("12 bits", "whole number of bytes")),
    Case("numel-overflow-huge-dims", tensors({"a": entry("F32", [2**62, 2**62, 2**62], (0, 8))}, 8),
         "st-numel-overflow", ("overflows", "64 bits")),
    Case("numel-overflow-many-dims", tensors({"a": entry("F32", [10**6] * 40, (0, 8))}, 8),
         "st-numel-overflow", ("more bytes than",)),
    Case("trailing-bytes", tensors({"a": entry("F32", (2,), (0, 8))}, 11), "st-trailing-bytes",
         ("3 trailing bytes", "[0, 8)")),
    Case("no-tensors-but-data", pack(b"{}      ", bytes(16)), "st-trailing-bytes", ("16 trailing bytes",)),
    Case("data-section-short", tensors({"a": entry("F32", (4,), (0, 16))}, 10), "st-data-short",
         ("short", "ends at data offset 16", "only 10")),
    Case("metadata-non-string-value",
         tensors({"a": entry()}, 8, metadata={"epoch": 3}), "st-metadata", ("must be a string", '"epoch"')),
    Case("metadata-nested-object",
         tensors({"a": entry()}, 8, metadata={"cfg": {"lr": "1"}}), "st-metadata", ("must be a string",)),
    Case("metadata-not-an-object", tensors({"a": entry()}, 8, metadata=["a", "b"]), "st-metadata",
         ("object of string to string", "array")),
    Case("metadata-null", pack(b'{"__metadata__":null,"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
                               bytes(8)), "st-metadata", ("null",)),
    Case("tensor-named-metadata", tensors({}, 8, metadata=entry()), "st-metadata", ("cannot be named",)),
    Case("entry-not-an-object", tensors({"a": [0, 8]}, 0), "st-entry", ("must be an object", "array")),
    Case("entry-missing-field", tensors({"a": {"dtype": "F32", "shape": [2]}}, 8), "st-entry",
         ("missing data_offsets",)),
    Case("entry-unexpected-field", tensors({"a": {**entry(), "sha256": "x"}}, 8), "st-entry",
         ('unexpected "sha256"',)),
    Case("metadata-like-name", tensors({"__meta__": {"k": "v"}}, 0), "st-entry",
         ("only '__metadata__' may hold metadata",)),
    Case("empty-tensor-name", tensors({"": entry()}, 8), "st-name", ("empty",)),
    Case("control-character-in-name", tensors({"a\nb": entry()}, 8), "st-name", ("control character", "U+000A")),
    Case("lone-surrogate-in-name", pack(b'{"a\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
         "st-name", ("surrogate",)),
    Case("padding-with-nul-bytes",
         pack(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}\x00\x00', bytes(8)),
         "st-header-json", ("not valid json",)),
]


def test_there_are_at_least_24_distinct_malformed_files() -> None:
    assert len(CASES) >= 24
    assert len({case.content for case in CASES}) == len(CASES)
    assert len({case.id for case in CASES}) == len(CASES)


def test_the_valid_base_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "valid.safetensors"
    path.write_bytes(VALID)
    assert set(read_safetensors(path).tensors) == {"a", "b"}
    assert check_safetensors(path) == []


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_file_is_rejected_and_reported(case: Case, tmp_path: Path) -> None:
    path = tmp_path / f"{case.id}.safetensors"
    path.write_bytes(case.content)

    with pytest.raises(FormatError) as caught:
        read_safetensors(path)
    error = caught.value
    assert error.code == case.code, str(error)
    assert error.where == str(path)
    message = error.message.lower()
    for word in case.words:
        assert word.lower() in message, f"{word!r} not in {error.message!r}"
    assert "\n" not in str(error)

    findings = check_safetensors(path)
    assert findings, "check_safetensors found nothing"
    assert all(f.severity == "error" and f.code.startswith("st-") for f in findings)
    assert case.code in {f.code for f in findings}
    # One implementation: the first problem the check lists is the one the reader raises.
    assert (findings[0].code, findings[0].message) == (error.code, error.message)
    assert all(f.where == str(path) or f.where.startswith(f"{path}:") for f in findings)


def test_check_lists_every_problem_with_its_tensor(tmp_path: Path) -> None:
    header = {
        "__metadata__": {"epoch": 3},
        "bad_dtype": entry("F31", (2,), (0, 8)),
        "bad_shape": entry("F32", [-1], (8, 16)),
        "bad_size": entry("F32", (3,), (16, 20)),
    }
    path = tmp_path / "many.safetensors"
    path.write_bytes(pack(json.dumps(header), bytes(30)))

    findings = check_safetensors(path)
    by_code = {f.code: f for f in findings}
    assert set(by_code) == {"st-metadata", "st-dtype", "st-shape", "st-size-mismatch", "st-trailing-bytes"}
    assert by_code["st-dtype"].where == f"{path}:bad_dtype"
    assert by_code["st-shape"].where == f"{path}:bad_shape"
    assert by_code["st-size-mismatch"].where == f"{path}:bad_size"
    assert by_code["st-metadata"].where == str(path)
    assert "10 trailing bytes" in by_code["st-trailing-bytes"].message


def test_check_caps_the_number_of_findings(tmp_path: Path) -> None:
    header = {f"t{i}": entry("XX", (1,), (i, i + 1)) for i in range(500)}
    path = tmp_path / "flood.safetensors"
    path.write_bytes(pack(json.dumps(header), bytes(500)))
    findings = check_safetensors(path)
    assert len(findings) == 201
    assert findings[-1].code == "st-more-problems"
    assert "300 more problems" in findings[-1].message


def test_a_header_claiming_a_huge_length_is_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "claims.safetensors"
    path.write_bytes(pack(b"{}", length=2**64 - 1))
    with pytest.raises(FormatError, match="cap"):
        read_safetensors(path)


def test_reference_library_accepts_what_we_reject() -> None:
    """Documents where assetkit is stricter than the reference implementation."""
    from safetensors.numpy import load

    by_id = {case.id: case for case in CASES}
    for lenient in ("leading-space", "duplicate-tensor-name", "entry-unexpected-field", "metadata-null"):
        loaded = load(by_id[lenient].content)
        assert set(loaded) == {"a"}
        assert np.array_equal(loaded["a"], np.zeros(2, dtype=np.float32))
