"""The cases issue 8 says diffusers' ``from_single_file`` misdetects, through our converter:
UNet-only SDXL files (original names with and without ``model.diffusion_model.``, and diffusers
names as one loose file), SDXL VAEs (same tensors as the SD VAE: metadata or ``--family`` decide,
else the documented guess with a note), SD2 512/768-v (metadata decides, else 768-v with a note).
Full-size layouts are planned from headers (sparse files); bytes are checked on tiny models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _layouts_helpers import file_tensors, save_tiny_sdxl_pipeline, tensor_key

from assetkit.convert import plan_single_file_to_diffusers
from assetkit.convert.layout_convert import convert_layout
from assetkit.factory import load_shared_layout, make_fixture, write_sparse_safetensors
from assetkit.factory.layouts import select, strip_prefix
from assetkit.formats import open_asset

UNET = "model.diffusion_model."


def _meta_state_shapes(cls_name: str, config: dict) -> dict[str, tuple[int, ...]]:
    import diffusers
    import torch

    with torch.device("meta"):
        model = getattr(diffusers, cls_name).from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("naming", ["original", "original-prefixed", "diffusers"])
def test_full_size_sdxl_unet_alone_plans_the_sdxl_unet(tmp_path, layouts_dir, naming):
    if naming == "diffusers":
        path = make_fixture("unet_sdxl_diffusers", tmp_path, full=True)
    else:
        layout = select(load_shared_layout("sdxl_base", layouts_dir), [UNET])
        if naming == "original":
            layout = strip_prefix(layout, UNET)
        path = write_sparse_safetensors(layout, tmp_path / "unet.safetensors")
    with open_asset(path) as asset:
        plan = plan_single_file_to_diffusers(asset)
    assert (plan.family, plan.config_id, plan.layout, plan.names) == (
        "sdxl", "sdxl", "unet", "diffusers" if naming == "diffusers" else "original")
    assert plan.prefixes == {"unet": UNET if naming == "original-prefixed" else ""}
    assert plan.extras == ()
    comp = plan.components["unet"]
    assert {t.name: t.shape for t in comp.tensors} == _meta_state_shapes("UNet2DConditionModel", comp.config)


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    return save_tiny_sdxl_pipeline(tmp_path_factory.mktemp("sdxl") / "pipe")


@pytest.mark.parametrize("component", ["unet", "vae"])
def test_loose_diffusers_named_file_to_original_and_folder(tmp_path, tiny_sdxl, component):
    """A lone ``diffusion_pytorch_model.safetensors`` (diffusers names) -> original names that
    diffusers' from_single_file reads into the very same tensors; -> a loadable folder; and the
    original file back to a folder gives the loose file's bytes again."""
    import diffusers

    folder = tiny_sdxl / component
    loose = tmp_path / f"{component}.safetensors"
    shutil.copy(folder / "diffusion_pytorch_model.safetensors", loose)
    want = file_tensors(loose)
    orig = tmp_path / f"{component}-original.safetensors"
    summary = convert_layout(loose, orig, to="single-file", config_dir=folder)
    assert summary["layout"] == component and summary["extras"] == []
    names = list(file_tensors(orig))
    assert "input_blocks.0.0.weight" in names if component == "unet" else "encoder.down.0.block.0.conv1.weight" in names
    cls = getattr(diffusers, "UNet2DConditionModel" if component == "unet" else "AutoencoderKL")
    readable = orig
    if component == "unet":  # diffusers (0.42) reads a UNet only under model.diffusion_model. (KeyError otherwise)
        from safetensors.numpy import load_file, save_file

        readable = tmp_path / "unet-prefixed.safetensors"
        save_file({UNET + k: v for k, v in load_file(str(orig)).items()}, str(readable))
    theirs = cls.from_single_file(str(readable), config=str(folder), local_files_only=True, low_cpu_mem_usage=False)
    assert {k: tensor_key(v) for k, v in theirs.state_dict().items()} == want
    convert_layout(orig, tmp_path / "back", to="diffusers", config_dir=folder)
    assert file_tensors(tmp_path / "back" / "diffusion_pytorch_model.safetensors") == want
    convert_layout(loose, tmp_path / "wrapped", to="diffusers", config_dir=folder)
    model, info = cls.from_pretrained(str(tmp_path / "wrapped"), local_files_only=True, low_cpu_mem_usage=False,
                                      output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert {k: tensor_key(v) for k, v in model.state_dict().items()} == want


@pytest.mark.parametrize(("metadata", "family", "config_id", "guessed"), [
    ({}, None, "vae-sd", True),
    ({}, "sdxl", "vae-sdxl", False),
    ({"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"}, None, "vae-sdxl", False),
    ({"modelspec.architecture": "stable-diffusion-v1/vae"}, None, "vae-sd", False),
])
def test_bare_vae_family(tmp_path, layouts_dir, metadata, family, config_id, guessed):
    path = write_sparse_safetensors(load_shared_layout("vae_sd", layouts_dir), tmp_path / "vae.safetensors",
                                    metadata or None)
    with open_asset(path) as asset:
        plan = plan_single_file_to_diffusers(asset, family=family)
    assert plan.config_id == config_id
    assert any("--family sdxl" in n for n in plan.notes) == guessed


def test_sdxl_vae_keeps_its_family_through_a_single_file(tmp_path, tiny_sdxl):
    """A diffusers SDXL VAE folder (scaling factor 0.13025) -> a single file whose ModelSpec says
    SDXL -> the catalogue's SDXL VAE config is the one chosen, no guess."""
    import json

    from safetensors import safe_open

    folder = Path(shutil.copytree(tiny_sdxl / "vae", tmp_path / "sdxl-vae"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "scaling_factor": 0.13025}))
    convert_layout(folder, tmp_path / "vae.safetensors", to="single-file")
    with safe_open(str(tmp_path / "vae.safetensors"), "np") as fh:
        assert fh.metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-base/vae"
    from assetkit.convert import LayoutError
    from assetkit.probe import probe

    with open_asset(tmp_path / "vae.safetensors") as asset:
        assert (probe(asset).kind, probe(asset).family) == ("vae", "sdxl")
        with pytest.raises(LayoutError, match="the vae-sdxl layout needs are missing"):  # tiny: not the real widths
            plan_single_file_to_diffusers(asset)


@pytest.mark.parametrize(("metadata", "config_id", "noted"), [
    ({}, "sd2-v", True),
    ({"modelspec.architecture": "stable-diffusion-v2-768-v"}, "sd2-v", False),
    ({"modelspec.architecture": "stable-diffusion-v2-512", "modelspec.prediction_type": "epsilon"}, "sd2", False),
])
def test_sd2_768_v_or_512(tmp_path, layouts_dir, metadata, config_id, noted):
    path = write_sparse_safetensors(load_shared_layout("sd21_768v", layouts_dir), tmp_path / "sd2.safetensors",
                                    metadata or None)
    with open_asset(path) as asset:
        plan = plan_single_file_to_diffusers(asset)
    assert (plan.family, plan.config_id) == ("sd2", config_id)
    assert any("prediction type not stated" in n for n in plan.notes) == noted


def test_prefixed_vae_alone_comes_back_prefixed_and_replaces_without_double_prefix(tmp_path):
    """A VAE-only file under ``first_stage_model.`` -> folder (the sidecar records the prefix) ->
    the same names back; the folder baked into a checkpoint with ``--replace`` lands exactly on the
    checkpoint's VAE names."""
    from safetensors.numpy import load_file, save_file

    from assetkit.factory.diffusers_models import save_tiny_sd1_pipeline

    pipe = save_tiny_sd1_pipeline(tmp_path / "pipe", decisive_dims=False)
    single = tmp_path / "sd1.safetensors"
    convert_layout(pipe, single, to="single-file")
    vae_only = tmp_path / "vae.safetensors"
    save_file({k: v for k, v in load_file(str(single)).items() if k.startswith("first_stage_model.")}, str(vae_only))
    convert_layout(vae_only, tmp_path / "vae", to="diffusers", config_dir=pipe / "vae")
    convert_layout(tmp_path / "vae", tmp_path / "vae-back.safetensors", to="single-file")
    assert file_tensors(tmp_path / "vae-back.safetensors") == file_tensors(vae_only)
    summary = convert_layout(single, tmp_path / "baked.safetensors", to="single-file", config_dir=pipe,
                             replace=[f"vae={tmp_path / 'vae'}"])
    assert summary["replaced"] == {"vae": len(file_tensors(vae_only))}
    assert file_tensors(tmp_path / "baked.safetensors") == file_tensors(single)
