"""The strict safetensors reader on files written by the real ``safetensors`` library."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from assetkit.errors import AssetkitError, FormatError
from assetkit.formats import open_asset
from assetkit.formats.base import TensorInfo
from assetkit.formats.safetensors import check_safetensors, read_safetensors
from assetkit.formats.safetensors_writer import SafetensorsWriter, TensorSpec, plan_header

# Every dtype the numpy side of the library writes, with its safetensors id.
NUMPY_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "U64": np.uint64,
    "I32": np.int32, "U32": np.uint32, "I16": np.int16, "U16": np.uint16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_, "C64": np.complex64,
}


def raw_header(path: Path) -> tuple[int, dict]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return length, json.loads(data[8 : 8 + length])


def random_array(dtype: type, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype is np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype is np.complex64:
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


def test_every_numpy_dtype_reads_back_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shapes = [(3, 5), (7,), (2, 1, 4)]
    arrays = {
        f"layer.{dtype_id.lower()}.{i}": random_array(np_dtype, shape, rng)
        for dtype_id, np_dtype in NUMPY_DTYPES.items()
        for i, shape in enumerate(shapes)
    }
    path = tmp_path / "all.safetensors"
    save_file(arrays, str(path))
    loaded = load_file(str(path))

    asset = read_safetensors(path)
    assert asset.format == "safetensors"
    assert asset.files == [path]
    assert set(asset.tensors) == set(arrays)
    for name, array in loaded.items():
        info = asset.tensors[name]
        dtype_id = name.split(".")[1].upper()
        assert info.dtype == dtype_id
        assert info.shape == array.shape
        assert bytes(asset.tensor_bytes(name)) == array.tobytes()
        assert np.array_equal(asset.tensor_array(name), array)
    assert asset.parameters == sum(a.size for a in arrays.values())
    assert asset.nbytes == sum(a.nbytes for a in arrays.values())
    asset.close()


def test_torch_only_dtypes_bf16_fp8_fp4_read_back_identical(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load_file
    from safetensors.torch import save_file as torch_save_file

    generator = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=generator)
    raw_bytes = torch.randint(0, 256, (4, 6), dtype=torch.uint8, generator=generator)
    tensors = {
        "bf16": base.to(torch.bfloat16),
        "f8_e4m3": base.to(torch.float8_e4m3fn),
        "f8_e5m2": base.to(torch.float8_e5m2),
        "f8_e4m3fnuz": base.to(torch.float8_e4m3fnuz),
        "f8_e5m2fnuz": base.to(torch.float8_e5m2fnuz),
        "f8_e8m0": raw_bytes.view(torch.float8_e8m0fnu),
        "f4": raw_bytes.clone().view(torch.float4_e2m1fn_x2),  # two 4-bit values per byte
        "bf16_scalar": torch.tensor(1.5, dtype=torch.bfloat16),
        "bf16_empty": torch.zeros(0, 8, dtype=torch.bfloat16),
    }
    expected_dtype = {
        "bf16": "BF16", "f8_e4m3": "F8_E4M3", "f8_e5m2": "F8_E5M2", "f8_e4m3fnuz": "F8_E4M3FNUZ",
        "f8_e5m2fnuz": "F8_E5M2FNUZ", "f8_e8m0": "F8_E8M0", "f4": "F4", "bf16_scalar": "BF16",
        "bf16_empty": "BF16",
    }
    path = tmp_path / "torch.safetensors"
    torch_save_file(tensors, str(path))
    loaded = torch_load_file(str(path))
    _, header = raw_header(path)

    with read_safetensors(path) as asset:
        assert set(asset.tensors) == set(tensors)
        for name, tensor in loaded.items():
            info = asset.tensors[name]
            assert info.dtype == expected_dtype[name]
            assert list(info.shape) == header[name]["shape"]
            as_bytes = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
            assert bytes(asset.tensor_bytes(name)) == as_bytes
        # F4: the library records the logical 4-bit element count (4 x 12), which fills 24 bytes.
        assert asset.tensors["f4"].shape == (4, 12)
        assert asset.tensors["f4"].nbytes == 24


def test_metadata_empty_and_zero_dim_tensors(tmp_path: Path) -> None:
    arrays = {
        "scalar": np.array(3.25, dtype=np.float32),
        "empty": np.zeros((0,), dtype=np.float16),
        "empty_2d": np.zeros((4, 0), dtype=np.int64),
        "weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    }
    metadata = {"format": "pt", "modelspec.architecture": "stable-diffusion-v1", "note": "ünïcödé ✓"}
    path = tmp_path / "meta.safetensors"
    save_file(arrays, str(path), metadata=metadata)

    asset = read_safetensors(path)
    assert asset.metadata == metadata
    assert asset.tensors["scalar"].shape == ()
    assert asset.tensors["scalar"].numel == 1
    assert asset.tensor_array("scalar") == np.float32(3.25)
    for name in ("empty", "empty_2d"):
        assert asset.tensors[name].storage_nbytes == 0
        assert bytes(asset.tensor_bytes(name)) == b""
    assert asset.tensors["empty_2d"].shape == (4, 0)
    assert np.array_equal(asset.tensor_array("weight"), arrays["weight"])
    assert check_safetensors(path) == []


def test_offsets_are_absolute_and_tensors_in_data_order(tmp_path: Path) -> None:
    arrays = {name: np.full((i + 1, 3), i, dtype=np.float32) for i, name in enumerate("zyxwv")}
    path = tmp_path / "order.safetensors"
    save_file(arrays, str(path))
    header_len, header = raw_header(path)

    asset = read_safetensors(path)
    begins = [header[name]["data_offsets"][0] for name in asset.tensors]
    assert begins == sorted(begins)
    for name, info in asset.tensors.items():
        begin, end = header[name]["data_offsets"]
        assert info.data_offset == 8 + header_len + begin
        assert info.storage_nbytes == end - begin == info.nbytes
        assert info.file == path
        assert info.is_contiguous
    # No two tensors look like views of one storage (view_key is how converters find tied weights).
    assert len({info.view_key for info in asset.tensors.values()}) == len(asset.tensors)


def test_tensor_info_built_by_the_reader_equals_a_constructed_one(tmp_path: Path) -> None:
    path = tmp_path / "one.safetensors"
    save_file({"w": np.ones((2, 2), dtype=np.float16)}, str(path))
    header_len, _ = raw_header(path)
    info = read_safetensors(path).tensors["w"]
    assert info == TensorInfo("w", "F16", (2, 2), path, 8 + header_len, storage_key="w", storage_nbytes=8)
    assert info.stride is None and info.storage_offset == 0 and info.byteorder == "little"


def test_open_asset_dispatches_to_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"a": np.zeros(3, dtype=np.float32)}, str(path))
    asset = open_asset(path)
    assert asset.format == "safetensors"
    assert asset.tensors["a"].shape == (3,)


def test_missing_file_is_a_one_line_error_not_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.safetensors"
    for function in (read_safetensors, check_safetensors):
        with pytest.raises(AssetkitError) as caught:
            function(path)
        assert not isinstance(caught.value, FormatError)
        assert "cannot read" in str(caught.value)
        assert str(path) in str(caught.value)
        assert "\n" not in str(caught.value)


def test_header_only_huge_sparse_file_opens_instantly(tmp_path: Path) -> None:
    """Reading never touches tensor data: a 6 GiB (sparse) file opens as fast as a tiny one."""
    size = 6 * 1024**3
    spec = TensorSpec("big", "F32", (size // 4,))
    path = tmp_path / "huge.safetensors"
    header = plan_header([spec])
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + size)
    started = time.perf_counter()
    asset = read_safetensors(path)
    elapsed = time.perf_counter() - started
    assert asset.tensors["big"].nbytes == size
    assert elapsed < 0.5


def test_a_2500_tensor_header_parses_completely(tmp_path: Path) -> None:
    """Its speed is measured by bench/bench_parse.py (no wall-clock bound in a test)."""
    specs = [TensorSpec(f"model.diffusion_model.blocks.{i}.attn.to_q.weight", "F16", (8, 4)) for i in range(2500)]
    path = tmp_path / "many.safetensors"
    with SafetensorsWriter(path, specs, {"format": "pt"}) as writer:
        writer.write(bytes(sum(spec.nbytes for spec in specs)))
    with read_safetensors(path) as asset:
        assert len(asset.tensors) == 2500
        assert [name for name in asset.tensors] == [spec.name for spec in specs]
        assert all(info.shape == (8, 4) and info.dtype == "F16" for info in asset.tensors.values())


def test_check_reports_nothing_for_valid_library_files(tmp_path: Path) -> None:
    path = tmp_path / "ok.safetensors"
    save_file({"a": np.zeros((2, 3), np.float32), "b": np.zeros(0, np.int8)}, str(path), metadata={"k": "v"})
    assert check_safetensors(path) == []
    assert os.path.getsize(path) > 0
