"""validate: clean inputs pass; each corruption is found with its code; numerics on real files."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from _tiny_diffusers import copy_folder, rewrite_safetensors, saved_pipelines
from safetensors.numpy import save_file

from assetkit.check.numerics import tensor_stats
from assetkit.check.validate import validate_path
from assetkit.errors import AssetkitError, FormatError, UnsupportedFormatError

UNET_FILE = Path("unet") / "diffusion_pytorch_model.safetensors"
UNET_INDEX = Path("unet") / "diffusion_pytorch_model.safetensors.index.json"


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    return saved_pipelines()


@pytest.fixture
def plain(folders, tmp_path) -> Path:
    return copy_folder(folders["plain"], tmp_path / "pipeline")


@pytest.fixture
def sharded(folders, tmp_path) -> Path:
    return copy_folder(folders["sharded"], tmp_path / "pipeline")


def codes(report) -> set[str]:
    return {f.code for f in report.problems}


def failing_codes(report) -> set[str]:
    return {f.code for f in report.problems if f.failing}


def only(report, code: str):
    found = [f for f in report.problems if f.code == code]
    assert len(found) == 1, (code, report.problems)
    return found[0]


# ---- clean inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["plain", "fp16", "sharded", "bin"])
def test_clean_folders_are_valid(folders, layout):
    report = validate_path(folders[layout])
    assert report.ok, report.problems
    assert failing_codes(report) == set()
    assert any("against UNet2DConditionModel" in c for c in report.checked)
    assert any("against CLIPTextModel" in c for c in report.checked)
    assert any("against AutoencoderKL" in c for c in report.checked)
    assert report.to_dict()["ok"] is True and report.to_dict()["path"] == str(folders[layout])


def test_clean_variant_folder_with_variant(folders):
    report = validate_path(folders["fp16"], variant="fp16")
    assert report.ok and codes(report) == set()
    assert any("diffusion_pytorch_model.fp16.safetensors against UNet2DConditionModel" in c for c in report.checked)


def test_component_folder_alone(folders):
    report = validate_path(folders["plain"] / "unet")
    assert report.ok and codes(report) == set()
    assert any("against UNet2DConditionModel (208 tensors, 208 expected)" in c for c in report.checked)


def test_only_variant_files_warn_but_pass(folders):
    report = validate_path(folders["only_fp16"])
    assert report.ok
    assert {f.where for f in report.problems if f.code == "variant-only"} == {"unet", "vae", "text_encoder"}


# ---- config against weights --------------------------------------------------------------------
def test_tensor_deleted_from_weights(plain):
    rewrite_safetensors(plain / UNET_FILE, drop=("conv_in.weight", "mid_block.attentions.0.proj_in.bias"))
    report = validate_path(plain)
    assert not report.ok
    finding = only(report, "config-missing-weight")
    assert finding.where == "unet/diffusion_pytorch_model.safetensors"
    assert "2 of 208" in finding.message and "conv_in.weight" in finding.message
    assert "UNet2DConditionModel" in finding.message


def test_unexpected_tensor_in_weights(plain):
    rewrite_safetensors(plain / UNET_FILE, add={"extra_head.weight": np.zeros((4, 4), np.float32)})
    report = validate_path(plain)
    assert not report.ok
    assert "extra_head.weight" in only(report, "config-unexpected-weight").message


def test_config_shape_change_is_found(plain):
    config_path = plain / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["cross_attention_dim"] = 12
    config_path.write_text(json.dumps(config))
    report = validate_path(plain)
    finding = only(report, "config-shape-mismatch")
    assert finding.severity == "error" and finding.where == "unet/diffusion_pytorch_model.safetensors"
    assert finding.message.startswith("8 weight(s) shaped differently")  # to_k and to_v of 4 attn2 blocks
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight [8, 8] != expected [8, 12]" \
        in finding.message
    assert failing_codes(report) == {"config-shape-mismatch"}


def test_config_that_cannot_build_the_class(plain):
    config_path = plain / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["block_out_channels"] = [8]  # two down blocks, one channel count
    config_path.write_text(json.dumps(config))
    finding = only(validate_path(plain), "config-invalid")
    assert finding.where == "unet/config.json" and "UNet2DConditionModel cannot be built" in finding.message


def test_broken_component_config_is_a_problem_not_unreadable(plain):
    (plain / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel", ')
    report = validate_path(plain)
    assert not report.ok
    finding = only(report, "config-unreadable")
    assert finding.where == "unet/config.json" and "line 1 column" in finding.message


def test_broken_model_index_makes_the_folder_unreadable(plain):
    (plain / "model_index.json").write_text("{]")
    with pytest.raises(FormatError, match="model_index.json: broken JSON"):
        validate_path(plain)


def test_old_clip_checkpoint_names_are_accepted(plain):
    """transformers 4 wrote ``text_model.*`` names and a persistent position_ids buffer; both load."""
    from safetensors.numpy import load_file

    path = plain / "text_encoder" / "model.safetensors"
    tensors = {f"text_model.{name}": value for name, value in load_file(str(path)).items()}
    tensors["text_model.embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]
    save_file(tensors, str(path), metadata={"format": "pt"})
    report = validate_path(plain)
    assert report.ok, report.problems


def test_deprecated_vae_attention_names_are_accepted(plain):
    """diffusers renames query/key/value/proj_attn of old VAEs on load: not a problem."""
    from safetensors.numpy import load_file

    path = plain / "vae" / "diffusion_pytorch_model.safetensors"
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    tensors = {}
    for name, value in load_file(str(path)).items():
        for new, old in renames.items():
            name = name.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        tensors[name] = value
    assert any(".query." in n for n in tensors)
    save_file(tensors, str(path))
    assert validate_path(plain).ok


def test_broken_weight_file_inside_a_folder(plain):
    data = (plain / UNET_FILE).read_bytes()
    (plain / UNET_FILE).write_bytes(data[: len(data) - 100])
    report = validate_path(plain)
    assert not report.ok
    assert any(c.startswith("st-") for c in failing_codes(report))


# ---- layout ------------------------------------------------------------------------------------
def test_component_folder_removed(plain):
    shutil.rmtree(plain / "vae")
    report = validate_path(plain)
    finding = only(report, "folder-missing-component")
    assert finding.where == "vae" and "AutoencoderKL" in finding.message
    assert failing_codes(report) == {"folder-missing-component"}


def test_unlisted_component_folder_warns(plain):
    shutil.copytree(plain / "vae", plain / "vae_backup")
    report = validate_path(plain)
    assert report.ok
    assert only(report, "folder-unlisted-component").where == "vae_backup"


def test_model_index_sanity(plain):
    index = json.loads((plain / "model_index.json").read_text())
    index["_class_name"] = "NoSuchPipeline"
    index["vae"] = ["diffusers", None]
    (plain / "model_index.json").write_text(json.dumps(index))
    report = validate_path(plain)
    assert only(report, "folder-unknown-pipeline-class").severity == "warning"
    assert only(report, "folder-bad-entry").severity == "error"


def test_component_class_from_unknown_library_is_never_imported(plain):
    index = json.loads((plain / "model_index.json").read_text())
    index["unet"] = ["evil_module_xyz", "EvilUNet"]
    (plain / "model_index.json").write_text(json.dumps(index))
    report = validate_path(plain)
    assert report.ok
    assert "evil_module_xyz.EvilUNet" in only(report, "config-unchecked-class").message
    assert "evil_module_xyz" not in sys.modules


def test_tokenizer_without_vocabulary(plain):
    (plain / "tokenizer" / "tokenizer.json").unlink()
    assert only(validate_path(plain), "tokenizer-missing-files").where == "tokenizer"


def test_model_component_without_weights(plain):
    (plain / UNET_FILE).unlink()
    assert only(validate_path(plain), "component-missing-weights").where == "unet"


# ---- shards ------------------------------------------------------------------------------------
def _index(root: Path) -> dict:
    return json.loads((root / UNET_INDEX).read_text())


def test_shard_index_entry_for_a_missing_tensor(sharded):
    index = _index(sharded)
    first_shard = next(iter(index["weight_map"].values()))
    index["weight_map"]["ghost.weight"] = first_shard
    (sharded / UNET_INDEX).write_text(json.dumps(index))
    report = validate_path(sharded, variant=None)
    finding = only(report, "shard-missing-tensor")
    assert "ghost.weight" in finding.message and finding.where == f"unet/{UNET_INDEX.name}"


def test_shard_file_missing(sharded):
    index = _index(sharded)
    shard = sorted(set(index["weight_map"].values()))[2]
    (sharded / "unet" / shard).unlink()
    report = validate_path(sharded)
    finding = only(report, "shard-missing-file")
    assert finding.where == f"unet/{shard}"
    lost = sum(1 for s in index["weight_map"].values() if s == shard)
    assert f"({lost} tensor(s) lost)" in finding.message
    assert "config-missing-weight" in failing_codes(report)  # what diffusers would leave uninitialised


def test_tensor_in_two_shards(sharded):
    index = _index(sharded)
    shards = sorted(set(index["weight_map"].values()))
    moved = next(name for name, shard in index["weight_map"].items() if shard == shards[0])
    from safetensors.numpy import load_file

    value = load_file(str(sharded / "unet" / shards[0]))[moved]
    rewrite_safetensors(sharded / "unet" / shards[1], add={moved: value})
    finding = only(validate_path(sharded), "shard-duplicate-tensor")
    assert moved in finding.message and shards[0] in finding.message and shards[1] in finding.message


def test_duplicate_key_in_the_index_json(sharded):
    text = (sharded / UNET_INDEX).read_text()
    index = _index(sharded)
    name, shard = next(iter(index["weight_map"].items()))
    text = text.replace('"weight_map": {', f'"weight_map": {{\n    "{name}": "{shard}",', 1)
    (sharded / UNET_INDEX).write_text(text)
    assert name in only(validate_path(sharded), "shard-duplicate-entry").message


def test_index_pointing_at_the_wrong_shard(sharded):
    index = _index(sharded)
    shards = sorted(set(index["weight_map"].values()))
    name = next(n for n, s in index["weight_map"].items() if s == shards[0])
    index["weight_map"][name] = shards[1]
    (sharded / UNET_INDEX).write_text(json.dumps(index))
    assert name in only(validate_path(sharded), "shard-wrong-file").message


def test_stray_shard_and_total_size(sharded):
    index = _index(sharded)
    index["metadata"]["total_size"] += 4
    (sharded / UNET_INDEX).write_text(json.dumps(index))
    shutil.copy(sharded / "unet" / sorted(set(index["weight_map"].values()))[0],
                sharded / "unet" / "diffusion_pytorch_model-00099-of-00099.safetensors")
    report = validate_path(sharded)
    assert only(report, "shard-total-size-mismatch").severity == "warning"
    assert only(report, "shard-unreferenced-file").severity == "warning"
    # the stray shard duplicates tensors but is not named by the index, so diffusers never reads it
    assert report.ok, report.problems


def test_broken_shard_index(sharded):
    (sharded / UNET_INDEX).write_text('{"weight_map": ')
    report = validate_path(sharded)
    assert only(report, "shard-index-unreadable").where == f"unet/{UNET_INDEX.name}"


# ---- variants ----------------------------------------------------------------------------------
def test_variant_missing_for_one_component(folders, tmp_path):
    root = copy_folder(folders["fp16"], tmp_path / "p")
    (root / "vae" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    report = validate_path(root, variant="fp16")
    finding = only(report, "variant-missing")
    assert finding.where == "vae" and finding.severity == "error"
    without = validate_path(root)
    assert without.ok
    assert "vae" in only(without, "variant-incomplete").message


def test_fp16_variant_that_is_not_fp16(folders, tmp_path):
    root = copy_folder(folders["fp16"], tmp_path / "p")
    shutil.copy(root / UNET_FILE, root / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    finding = only(validate_path(root, variant="fp16"), "variant-dtype-mismatch")
    assert finding.where == "unet/diffusion_pytorch_model.fp16.safetensors" and "F32" in finding.message


# ---- single files ------------------------------------------------------------------------------
def test_single_safetensors_file(folders):
    report = validate_path(folders["plain"] / UNET_FILE)
    assert report.ok and report.checked == ["safetensors format rules"]


def test_malformed_safetensors_file(tmp_path, folders):
    bad = tmp_path / "bad.safetensors"
    data = (folders["plain"] / UNET_FILE).read_bytes()
    bad.write_bytes(data[:-1])
    report = validate_path(bad)
    assert not report.ok and all(c.startswith("st-") for c in failing_codes(report))


def test_unreadable_inputs_raise(tmp_path):
    with pytest.raises(AssetkitError, match="no such file"):
        validate_path(tmp_path / "nope.safetensors")
    png = tmp_path / "picture.ckpt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(UnsupportedFormatError, match="PNG image"):
        validate_path(png)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupportedFormatError, match="empty folder"):
        validate_path(tmp_path / "empty")


# ---- numerics ----------------------------------------------------------------------------------
def test_numerics_nan_inf_zero_and_mixed_dtypes(tmp_path):
    path = tmp_path / "numbers.safetensors"
    save_file({
        "good": np.linspace(-1, 1, 64, dtype=np.float32),
        "has_nan": np.array([1.0, np.nan, np.nan, 2.0], np.float32),
        "has_inf": np.array([np.inf, -np.inf, 0.5], np.float16),
        "zeros": np.zeros((3, 3), np.float32),
        "minus_zeros": np.full((2,), -0.0, np.float32),
        "int_zeros": np.zeros(4, np.int64),
    }, str(path))
    assert validate_path(path).ok  # structure alone is fine
    report = validate_path(path, numerics=True)
    assert not report.ok
    nan = only(report, "numerics-nan")
    assert nan.severity == "error" and "1 tensor(s) hold NaN (2 value(s)): has_nan" in nan.message
    assert "has_inf" in only(report, "numerics-inf").message and "(2 value(s))" in only(report, "numerics-inf").message
    zero = only(report, "numerics-all-zero")
    assert zero.severity == "warning" and "zeros" in zero.message and "minus_zeros" in zero.message
    assert "int_zeros" not in zero.message
    assert "F16 (1 tensors)" in only(report, "numerics-mixed-dtypes").message


def test_numerics_clean_file(tmp_path):
    path = tmp_path / "clean.safetensors"
    save_file({"a": np.ones((8, 8), np.float32), "b": np.arange(5, dtype=np.int32)}, str(path))
    report = validate_path(path, numerics=True)
    assert report.ok and codes(report) == set() and "numerics" in report.checked


def test_numerics_bf16_and_fp8(tmp_path):
    import torch
    from safetensors.torch import save_file as save_torch

    path = tmp_path / "low.safetensors"
    save_torch({
        "bf16": torch.tensor([1.0, float("nan"), float("inf"), 3.0], dtype=torch.bfloat16),
        "e4m3": torch.tensor([1.0, float("nan"), 0.5], dtype=torch.float32).to(torch.float8_e4m3fn),
        "e5m2": torch.tensor([float("inf"), 2.0], dtype=torch.float32).to(torch.float8_e5m2),
        "bf16_zero": torch.zeros(4, dtype=torch.bfloat16),
    }, str(path))
    report = validate_path(path, numerics=True)
    assert "2 tensor(s) hold NaN (2 value(s)): bf16, e4m3" in only(report, "numerics-nan").message
    assert "2 tensor(s) hold Inf (2 value(s)): bf16, e5m2" in only(report, "numerics-inf").message
    assert "bf16_zero" in only(report, "numerics-all-zero").message


def test_numerics_chunks_give_the_same_answer():
    values = np.zeros(10_001, np.float32)
    values[-1] = np.nan
    assert tensor_stats(values, "F32", chunk_elements=7) == tensor_stats(values, "F32")
    assert tensor_stats(values, "F32", chunk_elements=7).nan == 1
    assert tensor_stats(np.zeros(10, np.float32), "F32", chunk_elements=3).all_zero
    assert tensor_stats(np.arange(4, dtype=np.int64), "I64") is None


def test_numerics_in_a_folder_per_component(plain):
    from safetensors.numpy import load_file

    tensors = load_file(str(plain / UNET_FILE))
    tensors["conv_in.weight"][0, 0, 0, 0] = np.nan
    tensors["conv_out.bias"] = tensors["conv_out.bias"].astype(np.float16)
    save_file(tensors, str(plain / UNET_FILE))
    report = validate_path(plain, numerics=True)
    nan = only(report, "numerics-nan")
    assert nan.where == "unet/diffusion_pytorch_model.safetensors" and "conv_in.weight" in nan.message
    mixed = only(report, "numerics-mixed-dtypes")
    assert mixed.where == "unet/diffusion_pytorch_model.safetensors"
    assert failing_codes(report) == {"numerics-nan"}


def test_sharded_bin_text_encoder(plain):
    """transformers' sharded ``pytorch_model-*.bin`` + index: checked like safetensors shards."""
    import torch
    from safetensors.torch import load_file

    text_dir = plain / "text_encoder"
    state = load_file(str(text_dir / "model.safetensors"))
    (text_dir / "model.safetensors").unlink()
    names = sorted(state)
    weight_map = {}
    for number, shard_names in enumerate((names[:10], names[10:]), start=1):
        shard = f"pytorch_model-0000{number}-of-00002.bin"
        torch.save({n: state[n] for n in shard_names}, text_dir / shard)
        weight_map |= dict.fromkeys(shard_names, shard)
    index_path = text_dir / "pytorch_model.bin.index.json"
    index_path.write_text(json.dumps({"weight_map": weight_map}))
    report = validate_path(plain)
    assert report.ok, report.problems
    assert "text_encoder: container rules of pytorch_model-00002-of-00002.bin" in report.checked
    weight_map["ghost.bias"] = "pytorch_model-00001-of-00002.bin"
    index_path.write_text(json.dumps({"weight_map": weight_map}))
    assert "ghost.bias" in only(validate_path(plain), "shard-missing-tensor").message
