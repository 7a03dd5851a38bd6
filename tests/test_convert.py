"""convert_file: every benign checkpoint converts, bit for bit what torch.load returns, nothing run.

Checkpoints are written here by ``torch.save``; ``torch.load(weights_only=False)`` is used only
on those files, as the reference. The output is read back with ``safetensors.torch``.
"""

from __future__ import annotations

import hashlib
import io
import struct
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from assetkit.convert import convert_file
from assetkit.convert import to_safetensors as conversion
from assetkit.errors import (
    AssetkitError,
    OutputExistsError,
    UnsafeInputError,
    UnsupportedFormatError,
    VerificationError,
)
from assetkit.formats.tensor_source import TensorSource


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def raw(t: torch.Tensor) -> bytes:
    """A tensor's bytes in C order (dtype-agnostic, NaN-safe equality)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def reference(path: Path, key: str | None = "state_dict") -> dict[str, torch.Tensor]:
    """What torch itself loads from a file this test wrote (the tensors under ``key`` if present)."""
    loaded = torch.load(path, map_location="cpu", weights_only=False)
    if key is not None and isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
        loaded = loaded[key]
    flat: dict[str, torch.Tensor] = {}

    def walk(value, name: str) -> None:
        if isinstance(value, torch.Tensor):
            flat[name] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else str(k))

    walk(loaded, "")
    return flat


def assert_same_tensors(output: Path, expected: dict[str, torch.Tensor]) -> dict[str, str]:
    """Every expected tensor is in ``output`` (directly or as a tied alias), bit for bit."""
    got = load_file(output)
    with safe_open(output, framework="pt") as fh:
        metadata = fh.metadata() or {}
    assert metadata.get("format") == "pt"
    aliases = {name: metadata[name] for name in expected if name not in got}
    assert set(got) | set(aliases) == set(expected)
    for name, tensor in expected.items():
        stored = got[aliases.get(name, name)]
        assert stored.dtype == tensor.dtype, name
        assert tuple(stored.shape) == tuple(tensor.shape), name
        assert raw(stored) == raw(tensor), name
    return metadata


def write_be_checkpoint(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A torch zip as a big-endian machine writes it: ``byteorder`` = big, records byte-swapped.

    Every tensor has its own storage, so torch numbers the records 0, 1, ... in dict order.
    """
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    itemsizes = {str(i): (t.element_size(), t.is_complex()) for i, t in enumerate(tensors.values())}
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            data = source.read(info)
            member = info.filename.split("/", 1)[1]
            if member == "byteorder":
                data = b"big"
            elif member.startswith("data/"):
                size, is_complex = itemsizes[member[len("data/"):]]
                unit = size // 2 if is_complex else size  # a complex number is two floats
                if unit > 1:
                    data = b"".join(data[i: i + unit][::-1] for i in range(0, len(data), unit))
            out.writestr(info.filename, data)


@pytest.fixture
def lightning_module(monkeypatch):
    """A stand-in ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`` so torch.save can pickle it."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    modules = {name: types.ModuleType(name) for name in names}

    class ModelCheckpoint:
        def __init__(self) -> None:
            self.monitor = None
            self.best_model_score = None
            self.dirpath = "/logs/checkpoints"

    ModelCheckpoint.__module__ = names[-1]
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    modules[names[-1]].ModelCheckpoint = ModelCheckpoint
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return ModelCheckpoint


# ---------------------------------------------------------------------------------------------
# benign checkpoints
# ---------------------------------------------------------------------------------------------
def _every_dtype() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "f32": torch.randn(4, 5),
        "f16": torch.randn(3, 7).half(),
        "bf16": torch.randn(6).bfloat16(),
        "f64": torch.randn(2, 2, dtype=torch.float64),
        "bool": torch.tensor([True, False, True]),
        "i64": torch.arange(10),
        "i32": torch.arange(3, dtype=torch.int32),
        "u8": torch.arange(5, dtype=torch.uint8),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(3.5),
        "param": torch.nn.Parameter(torch.randn(2, 3)),
        "special": torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45]),
        "c64": torch.randn(3, dtype=torch.complex64),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_plain_state_dict_every_dtype(tmp_path: Path, legacy: bool) -> None:
    src = tmp_path / "model.pt"
    torch.save(_every_dtype(), src, _use_new_zipfile_serialization=not legacy)
    report = convert_file(src, tmp_path / "model.safetensors")
    assert report.verified and report.tensors == len(_every_dtype())
    assert report.source_format == ("torch-legacy" if legacy else "torch-zip")
    metadata = assert_same_tensors(tmp_path / "model.safetensors", reference(src))
    assert metadata["assetkit.source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert metadata["assetkit.source"] == "model.pt"
    assert report.source_sha256 == metadata["assetkit.source_sha256"]


def test_lightning_checkpoint_keeps_plain_values_as_strings(tmp_path: Path) -> None:
    src = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"model.w": torch.randn(3, 3), "model.b": torch.zeros(3)},
                "global_step": 1200, "epoch": 4, "pytorch-lightning_version": "1.4.2",
                "optimizer_states": [{"state": {}}]}, src)
    dst = tmp_path / "last.safetensors"
    convert_file(src, dst, keep_metadata=True)
    metadata = assert_same_tensors(dst, reference(src))
    assert metadata["global_step"] == "1200" and metadata["epoch"] == "4"
    assert metadata["pytorch-lightning_version"] == "1.4.2"

    plain = tmp_path / "plain.safetensors"
    convert_file(src, plain)  # without --keep-metadata: provenance only
    metadata = assert_same_tensors(plain, reference(src))
    assert "global_step" not in metadata


def test_pickled_model_checkpoint_callback_is_safe_and_converts(tmp_path: Path, lightning_module) -> None:
    src = tmp_path / "sd.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.randn(2, 2)}, "global_step": 470000,
                "callbacks": {lightning_module: {"best_model_score": None}}, "checkpoint": lightning_module()}, src)
    dst = tmp_path / "sd.safetensors"
    report = convert_file(src, dst)
    assert not report.salvaged
    assert_same_tensors(dst, reference(src))


def test_textual_inversion_embedding(tmp_path: Path) -> None:
    src = tmp_path / "style.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(2, 768)},
                "name": "style", "step": 3000, "sd_checkpoint": "a9263745", "sd_checkpoint_name": "v1-5"}, src)
    dst = tmp_path / "style.safetensors"
    convert_file(src, dst, keep_metadata=True)
    metadata = assert_same_tensors(dst, reference(src))
    assert metadata["name"] == "style" and metadata["step"] == "3000"


def test_tied_weights_written_once_and_views_written_apart(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    embed = torch.randn(10, 4)
    state = {
        "token_embedding.weight": embed, "lm_head.weight": embed,  # tied: the very same view
        "base": base, "row": base[1], "column": base[:, 2], "transposed": base.t(),
        "window": base[1:3, 2:5], "tail": base.view(-1)[5:],
    }
    src = tmp_path / "tied.pt"
    torch.save(state, src)
    dst = tmp_path / "tied.safetensors"
    report = convert_file(src, dst)
    metadata = assert_same_tensors(dst, reference(src))
    assert report.tied == {"token_embedding.weight": "lm_head.weight"}
    assert metadata["token_embedding.weight"] == "lm_head.weight"
    assert set(load_file(dst)) == set(state) - {"token_embedding.weight"}
    assert set(report.materialized) == {"column", "transposed", "window"}


def test_non_contiguous_views_of_every_itemsize(tmp_path: Path) -> None:
    state = {f"{dtype}": torch.arange(30).reshape(5, 6).to(dtype).t() for dtype in
             (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.bool)}
    state["complex.t"] = torch.randn(3, 4, dtype=torch.complex64).t()
    src = tmp_path / "views.pt"
    torch.save(state, src)
    assert_same_tensors(convert_file(src, tmp_path / "views.safetensors").dst, reference(src))


def test_big_endian_records(tmp_path: Path) -> None:
    tensors = {"f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(4).bfloat16(),
               "i64": torch.arange(6) - 3, "f64": torch.randn(2, dtype=torch.float64),
               "c64": torch.randn(3, dtype=torch.complex64), "u8": torch.arange(4, dtype=torch.uint8),
               "bool": torch.tensor([True, False])}
    src = tmp_path / "be.pt"
    write_be_checkpoint(src, tensors)
    loaded = reference(src)  # torch swaps big-endian records on load
    for name, tensor in tensors.items():
        assert raw(loaded[name]) == raw(tensor)
    report = convert_file(src, tmp_path / "be.safetensors")
    assert_same_tensors(report.dst, loaded)
    assert set(report.materialized) >= {"f32", "f16", "bf16", "i64", "f64", "c64"}


def test_only_and_strip_prefix_extract_the_vae(tmp_path: Path) -> None:
    state = {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(4, 4),
             "first_stage_model.encoder.conv_in.weight": torch.randn(8, 3, 3, 3),
             "first_stage_model.decoder.conv_out.bias": torch.randn(3),
             "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None]}
    src = tmp_path / "sd.ckpt"
    torch.save({"state_dict": state}, src)
    dst = tmp_path / "vae.safetensors"
    report = convert_file(src, dst, only="first_stage_model.", strip_prefix="first_stage_model.")
    assert report.tensors == 2
    expected = {k[len("first_stage_model."):]: v for k, v in reference(src).items() if k.startswith("first_stage_model.")}
    assert_same_tensors(dst, expected)


def test_selection_that_matches_nothing_is_a_one_line_error(tmp_path: Path) -> None:
    src = tmp_path / "m.pt"
    torch.save({"a.w": torch.zeros(1)}, src)
    with pytest.raises(AssetkitError, match=r"--only 'vae\.' matches no tensors; prefixes present: a\. \(1\)"):
        convert_file(src, tmp_path / "o.safetensors", only="vae.")
    with pytest.raises(AssetkitError, match="--strip-prefix"):
        convert_file(src, tmp_path / "o.safetensors", strip_prefix="zzz.")
    with pytest.raises(AssetkitError, match="--state-dict-key 'ema'"):
        convert_file(src, tmp_path / "o.safetensors", state_dict_key="ema")
    assert not (tmp_path / "o.safetensors").exists()


def test_state_dict_key_picks_a_sub_dict(tmp_path: Path) -> None:
    src = tmp_path / "m.pt"
    torch.save({"ema": {"w": torch.randn(2)}, "model": {"w": torch.randn(2)}, "step": 3}, src)
    dst = tmp_path / "ema.safetensors"
    convert_file(src, dst, state_dict_key="ema")
    assert_same_tensors(dst, reference(src, key="ema"))


def test_state_dict_key_of_an_unwrapped_state_dict(tmp_path: Path) -> None:
    src = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"w": torch.randn(2)}, "global_step": 1}, src)
    dst = tmp_path / "o.safetensors"
    convert_file(src, dst, state_dict_key="state_dict")
    assert_same_tensors(dst, reference(src))


def test_dtype_casts_floating_tensors_only(tmp_path: Path) -> None:
    state = _every_dtype()
    del state["c64"]
    src = tmp_path / "m.pt"
    torch.save(state, src)
    dst = tmp_path / "half.safetensors"
    report = convert_file(src, dst, dtype="fp16")
    expected = {k: (v.to(torch.float16) if v.is_floating_point() else v) for k, v in reference(src).items()}
    assert_same_tensors(dst, expected)
    assert report.dtype_changes == {"BF16->F16": 1, "F32->F16": 5, "F64->F16": 1}
    assert load_file(dst)["i64"].dtype == torch.int64


def test_bf16_cast_of_a_strided_view(tmp_path: Path) -> None:
    src = tmp_path / "m.pt"
    torch.save({"t": torch.randn(64, 33).t()}, src)
    dst = tmp_path / "o.safetensors"
    convert_file(src, dst, dtype="bf16")
    assert_same_tensors(dst, {"t": reference(src)["t"].to(torch.bfloat16)})


def test_safetensors_round_trip_and_metadata_edit(tmp_path: Path) -> None:
    torch.manual_seed(1)
    state = {"a": torch.randn(5, 5), "b": torch.arange(4), "c": torch.randn(3).bfloat16()}
    src = tmp_path / "in.safetensors"
    save_file(state, src, metadata={"modelspec.title": "x"})
    same = tmp_path / "same.safetensors"
    convert_file(src, same, keep_metadata=True, metadata={"license": "mit"})
    metadata = assert_same_tensors(same, state)
    assert metadata["modelspec.title"] == "x" and metadata["license"] == "mit"
    assert metadata["assetkit.source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    # fp32 -> fp16 -> fp32 is exactly the fp16 values widened again, as in torch
    half, back = tmp_path / "half.safetensors", tmp_path / "back.safetensors"
    convert_file(src, half, dtype="fp16")
    convert_file(half, back, dtype="fp32")
    assert_same_tensors(back, {k: (v.half().float() if v.is_floating_point() else v) for k, v in state.items()})


def test_existing_output_is_refused_and_untouched(tmp_path: Path) -> None:
    src = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, src)
    dst = tmp_path / "m.safetensors"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        convert_file(src, dst)
    assert dst.read_bytes() == b"precious"
    convert_file(src, dst, overwrite=True)
    assert_same_tensors(dst, reference(src))


def test_unsafe_pickle_is_refused_and_salvage_keeps_tensors(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    src = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.arange(6.0)}, "hook": Payload()}, src)
    dst = tmp_path / "evil.safetensors"
    with pytest.raises(UnsafeInputError) as refused:
        convert_file(src, dst)
    assert any(f.severity == "dangerous" for f in refused.value.findings)
    assert not dst.exists()
    warnings: list[str] = []
    report = convert_file(src, dst, salvage=True, keep_metadata=True, warn=warnings.append)
    assert report.salvaged and warnings and "SALVAGE" in warnings[0]
    got = load_file(dst)
    assert list(got) == ["w"] and raw(got["w"]) == raw(torch.arange(6.0))
    with safe_open(dst, framework="pt") as fh:
        assert "hook" not in (fh.metadata() or {})
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_unsupported_containers(tmp_path: Path) -> None:
    seven_zip = tmp_path / "model.ckpt"
    seven_zip.write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\x00" * 64)
    with pytest.raises(UnsupportedFormatError):
        convert_file(seven_zip, tmp_path / "a.safetensors")
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    with pytest.raises(UnsupportedFormatError):
        convert_file(scripted, tmp_path / "b.safetensors")
    assert not (tmp_path / "a.safetensors").exists() and not (tmp_path / "b.safetensors").exists()


def test_a_corrupted_copy_fails_verification_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "m.pt"
    torch.save({"a": torch.randn(100), "b": torch.randn(50)}, src)
    copy = TensorSource.copy_chunks

    def flip_one_bit(self, info):
        for chunk in copy(self, info):
            if info.name == "b":
                damaged = bytearray(chunk)
                damaged[7] ^= 0x10
                chunk = memoryview(damaged)
            yield chunk

    monkeypatch.setattr(TensorSource, "copy_chunks", flip_one_bit)
    dst = tmp_path / "m.safetensors"
    with pytest.raises(VerificationError, match="tensor 'b' differs"):
        convert_file(src, dst)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file either
    # --no-verify would have let it through: verification is what caught it
    convert_file(src, dst, verify=False)
    assert raw(load_file(dst)["b"]) != raw(reference(src)["b"])


def test_large_tensors_are_copied_in_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(conversion, "CAST_CHUNK_BYTES", 1001)  # not a whole number of elements
    src = tmp_path / "m.pt"
    torch.save({"big": torch.randn(10_000), "odd": torch.randn(1001).half(), "t": torch.randn(70, 90).t()}, src)
    original = TensorSource.__init__

    def small_chunks(self, chunk_bytes=4096):
        original(self, chunk_bytes=4096)

    monkeypatch.setattr(TensorSource, "__init__", small_chunks)
    dst = tmp_path / "o.safetensors"
    convert_file(src, dst, dtype="bf16")
    assert_same_tensors(dst, {k: v.bfloat16() for k, v in reference(src).items()})


def test_source_hash_and_header_layout_agree_with_safetensors(tmp_path: Path) -> None:
    src = tmp_path / "m.pt"
    torch.save({"w": torch.randn(8)}, src)
    dst = tmp_path / "m.safetensors"
    report = convert_file(src, dst)
    header_len = struct.unpack("<Q", dst.read_bytes()[:8])[0]
    assert dst.stat().st_size == report.file_bytes == 8 + header_len + 32


def test_whole_safetensors_source_keeps_what_it_says_about_itself(tmp_path: Path) -> None:
    """A dtype change must not lose ModelSpec metadata (here: v-prediction, which only the metadata
    can tell for SD 2.x); an extract keeps it only when asked, as it may no longer be true."""
    from assetkit.factory import make_fixture
    from assetkit.formats import open_asset
    from assetkit.probe import probe

    src = make_fixture("sd21_768v_modelspec", tmp_path, "safetensors")
    with open_asset(src) as asset:
        source_metadata = dict(asset.metadata)
        assert probe(asset).prediction_type == "v_prediction"

    fp16 = tmp_path / "fp16.safetensors"
    convert_file(src, fp16, dtype="fp16")
    with open_asset(fp16) as asset:
        for key, value in source_metadata.items():
            assert asset.metadata[key] == value
        result = probe(asset)
        assert (result.family, result.prediction_type) == ("sd2", "v_prediction")

    vae = tmp_path / "vae.safetensors"
    convert_file(src, vae, only="first_stage_model.", strip_prefix="first_stage_model.")
    with open_asset(vae) as asset:
        assert not any(key.startswith("modelspec.") for key in asset.metadata)
