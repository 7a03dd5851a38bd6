"""The diffusers folder reader on pipelines saved by diffusers itself (tiny models, no network)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _tiny_diffusers import COMPONENTS, copy_folder, saved_pipelines
from safetensors import safe_open

from assetkit.errors import FormatError, UnsupportedFormatError
from assetkit.formats import open_asset
from assetkit.formats.diffusers_folder import read_diffusers_folder


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    return saved_pipelines()


def reference_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes as the reference safetensors implementation reads them."""
    with safe_open(str(path), framework="np") as handle:
        return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118 - safe_open is no dict


def shapes_of(asset) -> dict[str, tuple[int, ...]]:
    return {name: info.shape for name, info in asset.tensors.items()}


def test_pipeline_components_configs_and_tensors(folders):
    root = folders["plain"]
    asset = read_diffusers_folder(root)
    assert asset.format == "diffusers"
    assert set(asset.components) == set(COMPONENTS)  # safety_checker etc. are [null, null]: skipped
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert asset.components[name].format == "diffusers-component"
    assert {"model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
            "scheduler/scheduler_config.json", "tokenizer/tokenizer_config.json"} <= set(asset.configs)
    assert asset.configs["unet/config.json"]["cross_attention_dim"] == 8
    assert asset.configs["model_index.json"]["_class_name"] == "StableDiffusionPipeline"

    unet_file = root / "unet" / "diffusion_pytorch_model.safetensors"
    assert shapes_of(asset.components["unet"]) == reference_shapes(unet_file)
    text_file = root / "text_encoder" / "model.safetensors"
    assert shapes_of(asset.components["text_encoder"]) == reference_shapes(text_file)
    expected_total = sum(len(reference_shapes(f)) for f in (unet_file, text_file,
                                                           root / "vae" / "diffusion_pytorch_model.safetensors"))
    assert len(asset.tensors) == expected_total
    # the parent's entries are the components' very TensorInfo objects, under "<component>/<name>"
    assert asset.tensors["unet/conv_in.weight"] is asset.components["unet"].tensors["conv_in.weight"]
    assert asset.components["scheduler"].tensors == {}
    assert sorted(p.name for p in asset.files) == sorted(
        ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors", "model.safetensors"])
    assert asset.notes == []
    asset.close()


def test_tensor_data_reads_through_the_pipeline(folders):
    root = folders["plain"]
    with read_diffusers_folder(root) as asset, safe_open(
        str(root / "unet" / "diffusion_pytorch_model.safetensors"), framework="np"
    ) as handle:
        np.testing.assert_array_equal(asset.tensor_array("unet/conv_in.weight"), handle.get_tensor("conv_in.weight"))


def test_open_asset_dispatches_folders(folders):
    asset = open_asset(folders["plain"])
    assert asset.format == "diffusers" and len(asset.components) == 5
    asset.close()


def test_component_folder_alone(folders):
    asset = read_diffusers_folder(folders["plain"] / "unet")
    assert asset.format == "diffusers-component"
    assert set(asset.configs) == {"config.json"}
    assert shapes_of(asset) == reference_shapes(folders["plain"] / "unet" / "diffusion_pytorch_model.safetensors")
    assert asset.metadata.get("format") == "pt"
    scheduler = read_diffusers_folder(folders["plain"] / "scheduler")
    assert scheduler.format == "diffusers-component" and scheduler.tensors == {}
    assert scheduler.configs["scheduler_config.json"]["_class_name"] == "DDIMScheduler"


def test_variant_selection(folders):
    root = folders["fp16"]
    plain = read_diffusers_folder(root)
    assert plain.dtype_counts() == {"F32": len(plain.tensors)}  # no variant asked: the plain files
    assert all(".fp16." not in p.name for p in plain.files)
    fp16 = read_diffusers_folder(root, variant="fp16")
    assert fp16.dtype_counts() == {"F16": len(fp16.tensors)}
    assert all(".fp16." in p.name for p in fp16.files) and len(fp16.files) == 3
    assert set(fp16.tensors) == set(plain.tensors)
    assert fp16.notes == []


def test_variant_only_folder_is_read_with_a_note(folders):
    asset = read_diffusers_folder(folders["only_fp16"])
    assert asset.dtype_counts() == {"F16": len(asset.tensors)} and len(asset.tensors) > 300
    assert any(note.startswith("unet: only variant weights (fp16)") for note in asset.notes)


def test_requested_variant_missing_falls_back_with_a_note(folders):
    asset = read_diffusers_folder(folders["fp16"], variant="bf16")
    assert asset.dtype_counts() == {"F32": len(asset.tensors)}
    assert any("no 'bf16' variant weights" in note for note in asset.notes)


def test_sharded_weights(folders):
    sharded = read_diffusers_folder(folders["sharded"])
    plain = read_diffusers_folder(folders["plain"])
    unet_files = [p.name for p in sharded.components["unet"].files]
    assert unet_files[0] == "diffusion_pytorch_model.safetensors.index.json"
    assert len(unet_files) > 3 and all("-of-" in name for name in unet_files[1:])
    assert shapes_of(sharded) == shapes_of(plain)
    # a tensor from a later shard reads back identical to the unsharded file
    name = "unet/" + next(n for n, i in sharded.components["unet"].tensors.items() if i.file != sharded.components[
        "unet"].tensors["conv_in.weight"].file)
    np.testing.assert_array_equal(sharded.tensor_array(name), plain.tensor_array(name))
    assert sharded.notes == []
    fp16 = read_diffusers_folder(folders["sharded"], variant="fp16")
    assert fp16.components["unet"].files[0].name == "diffusion_pytorch_model.safetensors.index.fp16.json"
    assert fp16.components["unet"].dtype_counts() == {"F16": len(fp16.components["unet"].tensors)}


def test_sharded_index_missing_shard_is_a_note(folders, tmp_path):
    root = copy_folder(folders["sharded"], tmp_path / "p")
    index = json.loads((root / "unet" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    lost_shard = sorted(set(index["weight_map"].values()))[1]
    (root / "unet" / lost_shard).unlink()
    asset = read_diffusers_folder(root)
    assert any(lost_shard in note and "missing" in note for note in asset.notes)
    lost = [n for n, s in index["weight_map"].items() if s == lost_shard]
    assert all(f"unet/{n}" not in asset.tensors for n in lost)


def test_bin_weights_through_the_pickle_reader(folders):
    asset = read_diffusers_folder(folders["bin"])
    assert [p.name for p in asset.components["unet"].files] == ["diffusion_pytorch_model.bin"]
    assert shapes_of(asset.components["unet"]) == shapes_of(read_diffusers_folder(folders["plain"] / "unet"))
    np.testing.assert_array_equal(asset.tensor_array("vae/decoder.conv_in.weight"),
                                  read_diffusers_folder(folders["plain"]).tensor_array("vae/decoder.conv_in.weight"))


def test_broken_model_index_names_file_and_position(tmp_path, folders):
    root = copy_folder(folders["plain"], tmp_path / "p")
    (root / "model_index.json").write_text('{\n  "_class_name": "StableDiffusionPipeline",\n  "unet": [\n')
    with pytest.raises(FormatError) as caught:
        read_diffusers_folder(root)
    message = str(caught.value)
    assert "model_index.json" in message and "line 4 column 1" in message and "\n" not in message


def test_broken_component_config_is_a_format_error(tmp_path, folders):
    root = copy_folder(folders["plain"], tmp_path / "p")
    (root / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel",}')
    with pytest.raises(FormatError, match=r"unet/config.json: broken JSON: .* line 1 column 40"):
        read_diffusers_folder(root)


def test_missing_listed_component_is_a_note(tmp_path, folders):
    root = copy_folder(folders["plain"], tmp_path / "p")
    shutil.rmtree(root / "vae")
    asset = read_diffusers_folder(root)
    assert "vae" not in asset.components
    assert any(note.startswith("vae: listed in model_index.json") for note in asset.notes)


def test_unlisted_component_folder_is_a_note(tmp_path, folders):
    root = copy_folder(folders["plain"], tmp_path / "p")
    shutil.copytree(root / "vae", root / "vae_extra")
    asset = read_diffusers_folder(root)
    assert "vae_extra" not in asset.components
    assert any(note.startswith("vae_extra: component folder not listed") for note in asset.notes)


def test_empty_folder(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="empty folder: no model_index.json, config.json or weights"):
        read_diffusers_folder(tmp_path)


def test_folder_of_loose_checkpoints_is_not_a_diffusers_folder(tmp_path, folders):
    shutil.copy(folders["plain"] / "unet" / "diffusion_pytorch_model.safetensors", tmp_path / "my-model.safetensors")
    with pytest.raises(UnsupportedFormatError, match=r"not a diffusers folder .*my-model\.safetensors.*file itself"):
        read_diffusers_folder(tmp_path)


def test_reading_folders_never_imports_torch(folders):
    code = (
        "import sys\n"
        "from assetkit.formats import open_asset\n"
        f"asset = open_asset({str(folders['sharded'])!r}, variant='fp16')\n"
        "asset.tensor_array('unet/conv_in.weight')\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "print(len(asset.tensors), heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    count, heavy = out.split(" ", 1)
    assert int(count) > 300 and heavy.strip() == "[]"


def test_transformers_bin_and_sharded_bin(folders, tmp_path):
    """``pytorch_model.bin`` (transformers before safetensors) and a sharded ``.bin`` with its index."""
    import torch
    from safetensors.torch import load_file

    root = copy_folder(folders["plain"], tmp_path / "p")
    text_dir = root / "text_encoder"
    state = load_file(str(text_dir / "model.safetensors"))
    (text_dir / "model.safetensors").unlink()
    torch.save(state, text_dir / "pytorch_model.bin")
    asset = read_diffusers_folder(root)
    assert [p.name for p in asset.components["text_encoder"].files] == ["pytorch_model.bin"]
    assert shapes_of(asset.components["text_encoder"]) == {k: tuple(v.shape) for k, v in state.items()}

    (text_dir / "pytorch_model.bin").unlink()
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2 :]}
    weight_map = {}
    for shard, shard_names in halves.items():
        torch.save({n: state[n] for n in shard_names}, text_dir / shard)
        weight_map |= dict.fromkeys(shard_names, shard)
    (text_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    asset = read_diffusers_folder(root)
    assert [p.name for p in asset.components["text_encoder"].files] == ["pytorch_model.bin.index.json", *halves]
    assert shapes_of(asset.components["text_encoder"]) == {k: tuple(v.shape) for k, v in state.items()}
    np.testing.assert_array_equal(asset.tensor_array(f"text_encoder/{names[-1]}"), state[names[-1]].numpy())
