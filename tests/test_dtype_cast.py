"""Precision casts: numpy only, bit-identical to torch's ``.to(dtype)`` (NaN stays NaN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assetkit.convert.dtype_cast import CASTABLE, cast_bytes, output_dtype

TORCH = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
UINT = {"F16": np.uint16, "BF16": np.uint16, "F32": np.uint32, "F64": np.uint64}


def _bits_of_f32_edge_cases(rng: np.random.Generator) -> np.ndarray:
    """Random floats plus every awkward class: subnormals, ties, overflow, inf, NaN payloads."""
    random_bits = rng.integers(0, 2**32, size=20_000, dtype=np.uint64).astype(np.uint32)
    normal = rng.standard_normal(5_000).astype(np.float32).view(np.uint32)
    special = np.array(
        [
            0x0000_0000, 0x8000_0000,  # +-0
            0x0000_0001, 0x8000_0001, 0x007F_FFFF, 0x0040_0000,  # f32 subnormals
            0x3380_0000, 0x3380_0001, 0x337F_FFFF, 0x3300_0000, 0x3300_0001,  # f16 subnormal edge
            0x3F80_8000, 0x3F81_8000, 0x3F80_7FFF, 0x3F80_8001,  # bf16 ties and near-ties
            0x3F80_1000, 0x3F80_3000,  # f16 ties
            0x477F_E000, 0x477F_F000, 0x477F_EFFF, 0x4780_0000,  # f16 max / overflow
            0x7F7F_FFFF, 0xFF7F_FFFF, 0x7F7F_8000,  # f32 max -> bf16 overflow to inf
            0x7F80_0000, 0xFF80_0000,  # inf
            0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0x7FA0_0000, 0xFF81_2345, 0x7FFF_FFFF,  # NaNs
        ],
        dtype=np.uint32,
    )
    return np.concatenate([special, random_bits, normal])


def _bits_of(dtype_id: str, rng: np.random.Generator) -> np.ndarray:
    f32_bits = _bits_of_f32_edge_cases(rng)
    if dtype_id == "F32":
        return f32_bits
    if dtype_id in ("F16", "BF16"):
        every = np.arange(2**16, dtype=np.uint16)  # all 65536 patterns, NaNs and subnormals included
        return every
    # F64: random bit patterns plus values near f32 rounding boundaries and out of f32 range
    random_bits = rng.integers(0, 2**63, size=20_000, dtype=np.uint64)
    values = np.concatenate(
        [
            rng.standard_normal(5_000) * 10.0 ** rng.integers(-50, 50, size=5_000),
            [1 + 2**-11 + 2**-40, 65520 - 2**-30, 1e300, -1e300, 1e-300, np.inf, -np.inf, np.nan],
        ]
    )
    return np.concatenate([random_bits, values.astype(np.float64).view(np.uint64)])


def _torch_cast(bits: np.ndarray, src: str, dst: str) -> np.ndarray:
    signed = {2: np.int16, 4: np.int32, 8: np.int64}[bits.itemsize]
    source = torch.from_numpy(bits.view(signed).copy()).view(TORCH[src])
    out = source.to(TORCH[dst])
    int_view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[out.element_size()]
    return out.view(int_view).numpy().view(UINT[dst])


def _is_nan(bits: np.ndarray, dtype_id: str) -> np.ndarray:
    if dtype_id == "BF16":
        return (bits & 0x7FFF) > 0x7F80
    return np.isnan(bits.view({"F16": np.float16, "F32": np.float32, "F64": np.float64}[dtype_id]))


@pytest.mark.parametrize("src", sorted(CASTABLE))
@pytest.mark.parametrize("dst", sorted(CASTABLE))
def test_cast_is_bit_identical_to_torch(src: str, dst: str) -> None:
    rng = np.random.default_rng(1234)
    bits = _bits_of(src, rng)
    ours = np.frombuffer(cast_bytes(bits.tobytes(), src, dst), dtype=UINT[dst])
    theirs = _torch_cast(bits, src, dst)
    assert ours.shape == theirs.shape
    nan_ours, nan_theirs = _is_nan(ours, dst), _is_nan(theirs, dst)
    # NaN stays NaN in the very same places; torch's NaN bit pattern depends on its kernel.
    np.testing.assert_array_equal(nan_ours, nan_theirs)
    mismatch = np.flatnonzero((ours != theirs) & ~nan_theirs)
    assert mismatch.size == 0, (
        f"{src}->{dst}: {mismatch.size} values differ, first input {hex(int(bits[mismatch[0]]))}: "
        f"ours {hex(int(ours[mismatch[0]]))} torch {hex(int(theirs[mismatch[0]]))}"
    )


def test_nan_casts_match_torch_bit_for_bit() -> None:
    """Every NaN shape (quiet, signalling, either sign, any payload) casts to the bits torch writes."""
    import torch

    nans = np.array([0x7F80_0001, 0x7FC0_0000, 0xFFC0_0000, 0xFF81_2345, 0x7FBF_FFFF, 0xFFFF_FFFF], dtype=np.uint32)
    for dst, torch_dtype in (("BF16", torch.bfloat16), ("F16", torch.float16)):
        ours = np.frombuffer(cast_bytes(nans.tobytes(), "F32", dst), dtype=np.uint16)
        oracle = torch.from_numpy(nans.view(np.float32).copy()).to(torch_dtype).view(torch.int16).numpy()
        assert [hex(v) for v in ours] == [hex(v) for v in oracle.view(np.uint16)], dst
    f16_nans = np.array([0x7C01, 0x7E00, 0xFE00, 0xFC01, 0x7FFF], dtype=np.uint16)
    ours = np.frombuffer(cast_bytes(f16_nans.tobytes(), "F16", "BF16"), dtype=np.uint16)
    oracle = torch.from_numpy(f16_nans.view(np.float16).copy()).to(torch.bfloat16).view(torch.int16).numpy()
    assert [hex(v) for v in ours] == [hex(v) for v in oracle.view(np.uint16)]


def test_widening_bf16_is_exact_even_for_nan_payloads() -> None:
    every = np.arange(2**16, dtype=np.uint16)
    widened = np.frombuffer(cast_bytes(every.tobytes(), "BF16", "F32"), dtype=np.uint32)
    np.testing.assert_array_equal(widened, every.astype(np.uint32) << 16)


def test_chunked_cast_equals_whole_cast() -> None:
    rng = np.random.default_rng(7)
    data = rng.standard_normal(10_001).astype(np.float32).tobytes()
    whole = bytes(cast_bytes(data, "F32", "BF16"))
    parts = b"".join(bytes(cast_bytes(data[i : i + 4 * 999], "F32", "BF16")) for i in range(0, len(data), 4 * 999))
    assert whole == parts


def test_output_dtype_casts_floats_only() -> None:
    assert output_dtype("F32", "F16") == "F16"
    assert output_dtype("BF16", "F32") == "F32"
    assert output_dtype("I64", "F16") == "I64"
    assert output_dtype("BOOL", "BF16") == "BOOL"
    assert output_dtype("F8_E4M3", "F16") == "F8_E4M3"
    assert output_dtype("F16", None) == "F16"


def test_rejects_partial_elements_and_non_float_types() -> None:
    with pytest.raises(ValueError, match="whole number"):
        cast_bytes(b"\x00\x00\x00", "F32", "F16")
    with pytest.raises(ValueError, match="castable"):
        cast_bytes(b"\x00" * 8, "I64", "F16")


def test_block_wise_cast_equals_one_block(monkeypatch) -> None:
    from assetkit.convert import dtype_cast

    rng = np.random.default_rng(3)
    data = rng.standard_normal(1000).astype(np.float32).tobytes()
    one_block = bytes(cast_bytes(data, "F32", "BF16"))
    monkeypatch.setattr(dtype_cast, "BLOCK_ELEMENTS", 7)
    assert bytes(cast_bytes(data, "F32", "BF16")) == one_block
    assert bytes(cast_bytes(data, "F32", "F16")) == np.frombuffer(data, np.float32).astype(np.float16).tobytes()
