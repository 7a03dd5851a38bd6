"""The streaming safetensors writer and atomic file output."""

from __future__ import annotations

import json
import os
import stat
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from assetkit.errors import AssetkitError, OutputExistsError
from assetkit.formats.atomic import atomic_write
from assetkit.formats.safetensors import check_safetensors, read_safetensors
from assetkit.formats.safetensors_writer import SafetensorsWriter, SpecError, TensorSpec, plan_header

NP_IDS = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64",
          np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL", np.dtype(np.float64): "F64",
          np.dtype(np.int8): "I8", np.dtype(np.int32): "I32"}


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(3).astype(np.float16),  # 6 bytes: next tensor unaligned
        "steps": np.array(1234, dtype=np.int64),
        "mask": rng.integers(0, 2, size=(5, 7)).astype(np.bool_),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "embed": rng.standard_normal((9, 2)).astype(np.float64),
        "codes": rng.integers(-128, 127, size=13, dtype=np.int8),
    }


def specs_for(arrays: dict[str, np.ndarray]) -> list[TensorSpec]:
    return [TensorSpec(name, NP_IDS[a.dtype], a.shape) for name, a in arrays.items()]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("chunk", [1, 7, 64, None], ids=["1B", "7B", "64B", "per-tensor"])
def test_round_trip_through_the_reference_library_and_our_reader(tmp_path: Path, chunk: int | None) -> None:
    arrays = sample_arrays()
    metadata = {"format": "pt", "source": "assetkit test ✓"}
    dest = tmp_path / "out.safetensors"
    with SafetensorsWriter(dest, specs_for(arrays), metadata) as writer:
        if chunk is None:
            for array in arrays.values():
                writer.write(array)  # numpy arrays are bytes-like: written without a copy
        else:
            stream = b"".join(a.tobytes() for a in arrays.values())
            for start in range(0, len(stream), chunk):
                writer.write(memoryview(stream)[start : start + chunk])
    assert writer.bytes_written == sum(a.nbytes for a in arrays.values())

    loaded = load_file(str(dest))
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array), name
    with safe_open(str(dest), framework="np") as handle:
        assert handle.metadata() == metadata

    asset = read_safetensors(dest)
    assert list(asset.tensors) == list(arrays)  # laid out in the given order
    assert asset.metadata == metadata
    for name, array in arrays.items():
        assert asset.tensors[name].shape == array.shape
        assert bytes(asset.tensor_bytes(name)) == array.tobytes()
    asset.close()
    assert check_safetensors(dest) == []
    assert leftovers(tmp_path) == ["out.safetensors"]


def test_header_is_padded_with_spaces_so_data_is_8_byte_aligned() -> None:
    for n in range(1, 12):
        specs = [TensorSpec("x" * n, "F32", (2, 2))]
        header = plan_header(specs, {"k": "v" * n})
        (length,) = struct.unpack("<Q", header[:8])
        assert len(header) == 8 + length
        assert (8 + length) % 8 == 0
        text = header[8:].decode("utf-8")
        assert text.startswith("{") and text.rstrip(" ").endswith("}")
        assert len(text) - len(text.rstrip(" ")) < 8  # space padding only, never more than needed
        parsed = json.loads(text)
        assert parsed["__metadata__"] == {"k": "v" * n}
        assert parsed["x" * n] == {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


def test_tensors_are_laid_out_in_the_given_order_contiguously() -> None:
    specs = [TensorSpec("b", "F16", (3,)), TensorSpec("a", "F32", (2,)), TensorSpec("z", "U8", (0,)),
             TensorSpec("c", "F4", (4,))]
    header = json.loads(plan_header(specs)[8:])
    assert list(header) == ["b", "a", "z", "c"]
    assert [header[k]["data_offsets"] for k in header] == [[0, 6], [6, 14], [14, 14], [14, 16]]


@pytest.mark.parametrize(
    ("specs", "metadata", "words"),
    [
        ([TensorSpec("a", "F31", (1,))], None, "unknown dtype"),
        ([TensorSpec("a", "F32", (-1,))], None, "non-negative"),
        ([TensorSpec("a", "F32", (True,))], None, "non-negative"),
        ([TensorSpec("a", "F32", (1,)), TensorSpec("a", "F16", (1,))], None, "duplicate"),
        ([TensorSpec("", "F32", (1,))], None, "empty"),
        ([TensorSpec("a\x00b", "F32", (1,))], None, "control character"),
        ([TensorSpec("__metadata__", "F32", (1,))], None, "__metadata__"),
        ([TensorSpec("a", "F4", (3,))], None, "whole bytes"),
        ([TensorSpec("a", "F32", (1,))], {"epoch": 3}, "strings"),
    ],
)
def test_invalid_specs_and_metadata_are_refused(specs: list[TensorSpec], metadata: dict | None, words: str,
                                                tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=words) as caught:
        plan_header(specs, metadata)
    assert isinstance(caught.value, AssetkitError) and isinstance(caught.value, ValueError)
    with pytest.raises(SpecError):
        SafetensorsWriter(tmp_path / "x.safetensors", specs, metadata)
    assert leftovers(tmp_path) == []


def test_too_many_bytes_are_refused_and_nothing_is_left(tmp_path: Path) -> None:
    dest = tmp_path / "out.safetensors"
    with pytest.raises(AssetkitError, match="too many bytes"), \
            SafetensorsWriter(dest, [TensorSpec("a", "F32", (2,))]) as writer:
        writer.write(bytes(4))
        writer.write(bytes(5))
    assert leftovers(tmp_path) == []


def test_missing_bytes_fail_the_commit_naming_the_tensor(tmp_path: Path) -> None:
    dest = tmp_path / "out.safetensors"
    specs = [TensorSpec("a", "F32", (2,)), TensorSpec("b", "F16", (4,)), TensorSpec("c", "U8", (3,))]
    with pytest.raises(AssetkitError, match=r'tensor "b" has 2 of its 8 bytes'), \
            SafetensorsWriter(dest, specs) as writer:
        writer.write(bytes(10))
        assert writer.current_tensor == "b"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("interrupt", [RuntimeError("source broke"), KeyboardInterrupt()],
                         ids=["exception", "keyboard-interrupt"])
def test_exception_mid_write_leaves_no_file_and_no_temp(tmp_path: Path, interrupt: BaseException) -> None:
    dest = tmp_path / "out.safetensors"
    with pytest.raises(type(interrupt)), SafetensorsWriter(dest, [TensorSpec("a", "F32", (1024,))]) as writer:
        writer.write(bytes(1000))
        temp_files = leftovers(tmp_path)
        assert len(temp_files) == 1 and temp_files[0].startswith(".out.safetensors.")
        assert temp_files[0].endswith(".tmp")
        raise interrupt
    assert leftovers(tmp_path) == []


def test_existing_dest_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    dest = tmp_path / "out.safetensors"
    dest.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--overwrite") as caught:
        SafetensorsWriter(dest, [TensorSpec("a", "F32", (1,))])
    assert str(dest) in str(caught.value)
    assert dest.read_bytes() == b"precious"
    assert leftovers(tmp_path) == ["out.safetensors"]


def test_overwrite_replaces_the_file_atomically(tmp_path: Path) -> None:
    dest = tmp_path / "out.safetensors"
    dest.write_bytes(b"old contents")
    old_inode = dest.stat().st_ino
    values = np.arange(4, dtype=np.float32)
    with SafetensorsWriter(dest, [TensorSpec("a", "F32", (4,))], overwrite=True) as writer:
        writer.write(values)
        # Until commit the old file is intact: readers never see a half-written one.
        assert dest.read_bytes() == b"old contents"
    assert dest.stat().st_ino != old_inode
    assert np.array_equal(load_file(str(dest))["a"], values)
    assert leftovers(tmp_path) == ["out.safetensors"]


def test_a_file_appearing_at_dest_during_the_write_is_not_clobbered(tmp_path: Path) -> None:
    dest = tmp_path / "out.safetensors"
    with pytest.raises(OutputExistsError), SafetensorsWriter(dest, [TensorSpec("a", "U8", (2,))]) as writer:
        writer.write(b"\x01\x02")
        dest.write_bytes(b"someone else's")
    assert dest.read_bytes() == b"someone else's"
    assert leftovers(tmp_path) == ["out.safetensors"]


def test_write_tensor_checks_order_and_size(tmp_path: Path) -> None:
    dest = tmp_path / "out.safetensors"
    specs = [TensorSpec("a", "F32", (2,)), TensorSpec("b", "U8", (3,))]
    with SafetensorsWriter(dest, specs) as writer:
        with pytest.raises(AssetkitError, match=r'"b" written out of order: next is "a"'):
            writer.write_tensor("b", bytes(3))
        with pytest.raises(AssetkitError, match=r'"a" needs 8 bytes, got 4'):
            writer.write_tensor("a", bytes(4))
        writer.write_tensor("a", np.ones(2, dtype=np.float32))
        writer.write_tensor("b", b"xyz")
        assert writer.current_tensor is None
    assert bytes(read_safetensors(dest).tensor_bytes("b")) == b"xyz"


def test_non_contiguous_arrays_are_refused(tmp_path: Path) -> None:
    with SafetensorsWriter(tmp_path / "o.safetensors", [TensorSpec("a", "F32", (2, 2))]) as writer:
        with pytest.raises(SpecError, match="C-contiguous"):
            writer.write(np.ones((2, 4), dtype=np.float32)[:, ::2])
        writer.write(np.ones((2, 2), dtype=np.float32))


def test_a_file_without_tensors_is_valid(tmp_path: Path) -> None:
    dest = tmp_path / "empty.safetensors"
    with SafetensorsWriter(dest, [], {"note": "nothing here"}):
        pass
    assert load_file(str(dest)) == {}
    asset = read_safetensors(dest)
    assert asset.tensors == {} and asset.metadata == {"note": "nothing here"}


def test_large_writes_are_not_copied(tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    payload = np.zeros(size, dtype=np.uint8)
    with SafetensorsWriter(tmp_path / "big.safetensors", [TensorSpec("a", "U8", (size,))]) as writer:
        tracemalloc.start()
        writer.write(payload)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"writing 64 MiB allocated {peak:,} bytes"
    assert (tmp_path / "big.safetensors").stat().st_size == len(plan_header(writer.specs)) + size


def test_writer_must_be_opened_before_writing(tmp_path: Path) -> None:
    writer = SafetensorsWriter(tmp_path / "o.safetensors", [TensorSpec("a", "U8", (1,))])
    with pytest.raises(AssetkitError, match="with block"):
        writer.write(b"x")
    assert leftovers(tmp_path) == []


# ---- atomic_write ------------------------------------------------------------------------------
def test_atomic_write_success_and_permissions(tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    with atomic_write(dest) as fh:
        fh.write(b"hello")
        assert not dest.exists()
        (temp,) = leftovers(tmp_path)
        assert temp.startswith(".file.bin.") and temp.endswith(".tmp")
    assert dest.read_bytes() == b"hello"
    assert leftovers(tmp_path) == ["file.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ValueError, match="boom"), atomic_write(dest, overwrite=True) as fh:
        fh.write(b"new but broken")
        raise ValueError("boom")
    assert dest.read_bytes() == b"old"
    assert leftovers(tmp_path) == ["file.bin"]


def test_atomic_write_refuses_existing_dest_without_overwrite(tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="exists; pass --overwrite to replace it"), atomic_write(dest):
        pytest.fail("the body must not run")
    assert dest.read_bytes() == b"old"
    with atomic_write(dest, overwrite=True) as fh:
        fh.write(b"new")
    assert dest.read_bytes() == b"new"


def test_atomic_write_missing_folder_and_folder_dest_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(AssetkitError, match="output folder does not exist") as caught, \
            atomic_write(tmp_path / "nope" / "file.bin"):
        pass
    assert "\n" not in str(caught.value) and str(tmp_path / "nope") in str(caught.value)
    with pytest.raises(AssetkitError, match="is a directory"), atomic_write(tmp_path, overwrite=True):
        pass


def test_replace_metadata_patches_the_header_before_commit(tmp_path: Path) -> None:
    dest = tmp_path / "out.safetensors"
    values = np.arange(6, dtype=np.float32)
    placeholder = {"sha256": "0" * 64, "note": "draft"}
    with SafetensorsWriter(dest, [TensorSpec("a", "F32", (6,))], placeholder) as writer:
        planned = len(writer.header)
        writer.write(values)
        writer.replace_metadata({"sha256": "ab" * 32, "note": "ok"})  # shorter: padded with spaces
        assert len(writer.header) == planned
        # The temporary file is complete and valid before it is renamed into place.
        temp = writer.temp_path
        assert temp is not None and temp.parent == tmp_path and not dest.exists()
        assert read_safetensors(temp).metadata == {"sha256": "ab" * 32, "note": "ok"}
        with pytest.raises(SpecError, match="reserve the room"):
            writer.replace_metadata({"sha256": "ab" * 32, "note": "much longer than the planned header"})
    assert writer.temp_path is None
    assert check_safetensors(dest) == []
    with safe_open(str(dest), framework="np") as handle:
        assert handle.metadata() == {"sha256": "ab" * 32, "note": "ok"}
        assert np.array_equal(handle.get_tensor("a"), values)


def test_spec_shapes_accept_integer_likes_and_refuse_the_rest() -> None:
    assert TensorSpec("a", "F32", [np.int64(2), 3]).shape == (2, 3)
    assert type(TensorSpec("a", "F32", (np.int32(4),)).shape[0]) is int
    for bad in [(2.0,), (True,), ("2",), 3, (-1,)]:
        with pytest.raises(SpecError):
            plan_header([TensorSpec("a", "F32", bad)])
