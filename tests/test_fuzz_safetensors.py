"""Property-based fuzzing of the safetensors header parser (and the writer that feeds it).

Whatever the bytes, ``read_safetensors`` returns an Asset or raises ``FormatError`` (never
another exception), quickly and without large allocations, and ``check_safetensors`` agrees
with it: no findings exactly when the reader accepts, and its first finding is the reader's error.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from assetkit.errors import FormatError
from assetkit.formats.dtypes import DTYPES
from assetkit.formats.safetensors import check_safetensors, read_safetensors
from assetkit.formats.safetensors_writer import TensorSpec, plan_header

FUZZ = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / "fuzz.safetensors"


def judge(path: Path, content: bytes) -> None:
    """Write ``content`` and check every property that must hold for any bytes."""
    path.write_bytes(content)
    started = time.perf_counter()
    try:
        asset = read_safetensors(path)
    except FormatError as exc:
        error: FormatError | None = exc
        assert exc.code.startswith("st-") and exc.message and "\n" not in str(exc)
    else:
        error = None
        size = len(content)
        for info in asset.tensors.values():
            assert info.data_offset is not None
            assert info.data_offset + info.nbytes <= size
            assert info.storage_nbytes == info.nbytes
        assert all(isinstance(value, str) for value in asset.metadata.values())
    findings = check_safetensors(path)
    assert time.perf_counter() - started < 0.5
    if error is None:
        assert findings == []
    else:
        assert findings and (findings[0].code, findings[0].message) == (error.code, error.message)
        assert all(f.severity == "error" for f in findings)


# ---- strategies ----------------------------------------------------------------------------------
names = st.text(min_size=0, max_size=12)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
dtype_ids = st.one_of(st.sampled_from(sorted(DTYPES)), st.text(max_size=6), json_scalars)
dims = st.one_of(st.integers(min_value=0, max_value=9), st.integers(min_value=-(2**66), max_value=2**66),
                 json_scalars)
shapes = st.one_of(st.lists(st.integers(min_value=0, max_value=6), max_size=4), st.lists(dims, max_size=10),
                   json_values)
offsets = st.one_of(
    st.tuples(st.integers(0, 200), st.integers(0, 200)).map(list),
    st.lists(st.integers(min_value=-(2**65), max_value=2**65), max_size=3),
    json_values,
)
entries = st.one_of(
    st.fixed_dictionaries({"dtype": dtype_ids, "shape": shapes, "data_offsets": offsets}),
    st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]), json_values, max_size=4),
    json_values,
)
metadata_values = st.one_of(st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3), json_values)


@st.composite
def valid_files(draw: st.DrawFn) -> bytes:
    specs = draw(st.lists(
        st.builds(TensorSpec, st.text(min_size=1, max_size=10).filter(lambda s: s.isprintable()),
                  st.sampled_from(["F32", "F16", "BF16", "U8", "I64", "BOOL", "F8_E4M3", "F4"]),
                  st.lists(st.integers(0, 5), max_size=3).map(tuple)),
        max_size=5, unique_by=lambda spec: spec.name))
    specs = [s for s in specs if s.numel * DTYPES[s.dtype].bits % 8 == 0 and s.name != "__metadata__"]
    metadata = draw(st.none() | st.dictionaries(st.text(max_size=5),
                                                 st.text(max_size=5), max_size=2))
    header = plan_header(specs, metadata)
    return header + draw(st.binary(min_size=sum(s.nbytes for s in specs), max_size=sum(s.nbytes for s in specs)))


def mutate(content: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length", "splice"]))
    if kind == "length":
        value = data.draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, len(content) + 16)))
        return struct.pack("<Q", value) + content[8:]
    if not content:
        return content
    position = data.draw(st.integers(0, len(content) - 1))
    if kind == "flip":
        return content[:position] + bytes([content[position] ^ data.draw(st.integers(1, 255))]) + content[position + 1:]
    if kind == "truncate":
        return content[:position]
    if kind == "insert":
        return content[:position] + data.draw(st.binary(min_size=1, max_size=8)) + content[position:]
    if kind == "delete":
        return content[:position] + content[position + data.draw(st.integers(1, 8)):]
    token = data.draw(st.sampled_from([b" ", b'"', b"{", b"}", b",", b"-", b"1e999", b"NaN", b"\\ud800", b"\xff"]))
    return content[:position] + token + content[position + len(token):]


# ---- properties ----------------------------------------------------------------------------------
@FUZZ
@given(content=valid_files())
@pytest.mark.slow
def test_files_from_our_writer_are_always_valid(scratch: Path, content: bytes) -> None:
    scratch.write_bytes(content)
    asset = read_safetensors(scratch)
    assert check_safetensors(scratch) == []
    (length,) = struct.unpack("<Q", content[:8])
    assert (8 + length) % 8 == 0
    assert sum(info.nbytes for info in asset.tensors.values()) == len(content) - 8 - length


@FUZZ
@given(content=valid_files(), data=st.data())
@pytest.mark.slow
def test_mutated_valid_files_never_crash(scratch: Path, content: bytes, data: st.DataObject) -> None:
    mutated = content
    for _ in range(data.draw(st.integers(1, 3))):
        mutated = mutate(mutated, data)
    judge(scratch, mutated)


@FUZZ
@given(
    header=st.dictionaries(names, entries, max_size=5),
    metadata=st.one_of(st.none(), metadata_values),
    data_len=st.integers(0, 256),
    prefix=st.sampled_from([b"", b" ", b"\n", b"\t"]),
    padding=st.sampled_from([b"", b" ", b"   ", b"\x00"]),
)
@pytest.mark.slow
def test_random_headers_never_crash(scratch: Path, header: dict, metadata: object, data_len: int,
                                    prefix: bytes, padding: bytes) -> None:
    if metadata is not None:
        header = {"__metadata__": metadata, **header}
    text = prefix + json.dumps(header).encode("utf-8", "surrogatepass") + padding
    judge(scratch, struct.pack("<Q", len(text)) + text + os.urandom(data_len))


@FUZZ
@given(content=st.binary(max_size=200))
@example(content=struct.pack("<Q", 10**18) + b"{}")
@example(content=struct.pack("<Q", 2**64 - 1) + b"{}")
@example(content=struct.pack("<Q", 2) + b"{}" + b"\x00" * 7)
def test_arbitrary_bytes_never_crash(scratch: Path, content: bytes) -> None:
    judge(scratch, content)


@FUZZ
@given(dims=st.lists(st.integers(min_value=1, max_value=2**63), min_size=1, max_size=64),
       dtype=st.sampled_from(sorted(DTYPES)))
def test_absurd_shapes_fail_fast_without_allocating(scratch: Path, dims: list[int], dtype: str) -> None:
    assume(any(d > 1000 for d in dims))
    text = json.dumps({"t": {"dtype": dtype, "shape": dims, "data_offsets": [0, 8]}}).encode()
    judge(scratch, struct.pack("<Q", len(text)) + text + bytes(8))
    with pytest.raises(FormatError):
        read_safetensors(scratch)
