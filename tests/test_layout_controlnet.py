"""ControlNets (SD1, SD2, SDXL) between the original layout and diffusers, against diffusers itself.

The original-layout files are written independently of the converter: the factory's
``ldm_controlnet`` (lllyasviel's ``cldm.ControlNet`` / SGM names, with or without
``control_model.``) with seeded random values, saved by the safetensors library. diffusers'
``ControlNetModel.from_single_file(config=<the same tiny config>)`` is the oracle for the
tensors; ``from_pretrained`` must load our folder with no missing or unexpected key; round trips
both ways are compared tensor by tensor (names, dtypes, shapes, bytes) through safetensors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _layouts_helpers import file_tensors, tensor_key

from assetkit.convert import SIDECAR
from assetkit.convert.layout_convert import convert_layout
from assetkit.factory import keys as K
from assetkit.factory import materialize

FAMILIES = ("sd1", "sd2", "sdxl")
PREFIXES = ("control_model.", "")
#: Tiny ControlNets: (factory ``ldm_controlnet`` arguments, the matching diffusers config). The
#: SDXL one keeps the real context width and pooled input (2048, 2816) so the probe knows it.
TINY = {
    "sd1": ({"attention_levels": (0,), "context_dim": 32},
            {"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "attention_head_dim": 2,
             "cross_attention_dim": 32}),
    "sd2": ({"attention_levels": (0,), "context_dim": 48, "use_linear": True},
            {"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "attention_head_dim": [2, 4],
             "cross_attention_dim": 48, "use_linear_projection": True}),
    "sdxl": ({"attention_levels": (1,), "transformer_depth": (1, 2), "context_dim": 2048, "use_linear": True,
              "adm_in_channels": 2816},
             {"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "attention_head_dim": [2, 4],
              "transformer_layers_per_block": [1, 2], "cross_attention_dim": 2048, "use_linear_projection": True,
              "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
              "projection_class_embeddings_input_dim": 2816}),
}
#: Tensors diffusers' ``from_single_file`` (0.42) leaves at their random initial values for an
#: original SDXL ControlNet: its ControlNet converter never maps ``label_emb`` to ``add_embedding``.
UNMAPPED_BY_DIFFUSERS = {"sdxl": {f"add_embedding.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}}


def _config(family: str) -> dict:
    return {"block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 32, **TINY[family][1]}


def write_original(family: str, prefix: str, dest: Path, seed: int = 0) -> Path:
    """An original-layout tiny ControlNet written by the factory and the safetensors library."""
    from safetensors.numpy import save_file

    layout = K.ldm_controlnet(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, prefix=prefix,
                              **TINY[family][0])
    save_file(materialize(layout, shrink=False, seed=seed), str(dest))
    return dest


def save_config(family: str, dest: Path) -> Path:
    """The tiny config folder, written by diffusers (``ControlNetModel.save_config``)."""
    from diffusers import ControlNetModel

    ControlNetModel.from_config(_config(family)).save_config(str(dest))
    return dest


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(family, prefix) -> (original file, config folder, our diffusers folder, our file back)."""
    out = {}
    for family in FAMILIES:
        root = tmp_path_factory.mktemp(f"cn-{family}")
        config = save_config(family, root / "config")
        for prefix in PREFIXES:
            tag = "prefixed" if prefix else "bare"
            orig = write_original(family, prefix, root / f"{tag}.safetensors")
            folder = root / f"{tag}-diffusers"
            convert_layout(orig, folder, to="diffusers", config_dir=config)
            back = root / f"{tag}-back.safetensors"
            convert_layout(folder, back, to="single-file")
            out[(family, prefix)] = (orig, config, folder, back)
    return out


CASES = [(f, p) for f in FAMILIES for p in PREFIXES]
IDS = [f"{f}-{'prefixed' if p else 'bare'}" for f, p in CASES]


@pytest.mark.parametrize(("family", "prefix"), CASES, ids=IDS)
def test_folder_equals_diffusers_from_single_file(converted, family, prefix):
    from diffusers import ControlNetModel

    orig, config, folder, _ = converted[(family, prefix)]
    theirs = ControlNetModel.from_single_file(str(orig), config=str(config), local_files_only=True,
                                             low_cpu_mem_usage=False)
    theirs = {k: tensor_key(v) for k, v in theirs.state_dict().items()}
    ours = file_tensors(folder / "diffusion_pytorch_model.safetensors")
    assert ours.keys() == theirs.keys()
    differ = {k for k in ours if ours[k] != theirs[k]}
    assert differ <= UNMAPPED_BY_DIFFUSERS.get(family, set())
    source = file_tensors(orig)
    for name in UNMAPPED_BY_DIFFUSERS.get(family, ()):  # ours hold the file's label_emb bytes
        original = prefix + name.replace("add_embedding.linear_1", "label_emb.0.0").replace(
            "add_embedding.linear_2", "label_emb.0.2")
        assert ours[name] == source[original]


@pytest.mark.parametrize(("family", "prefix"), CASES, ids=IDS)
def test_folder_loads_with_from_pretrained_without_missing_or_unexpected_keys(converted, family, prefix):
    from diffusers import ControlNetModel

    _, _, folder, _ = converted[(family, prefix)]
    model, info = ControlNetModel.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False,
                                                  output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    ours = file_tensors(folder / "diffusion_pytorch_model.safetensors")
    assert {k: tensor_key(v) for k, v in model.state_dict().items()} == ours


@pytest.mark.parametrize(("family", "prefix"), CASES, ids=IDS)
def test_round_trips_both_ways_are_identical_prefix_included(converted, tmp_path, family, prefix):
    orig, config, folder, back = converted[(family, prefix)]
    assert file_tensors(back) == file_tensors(orig)
    # The sidecar records a prefix the way back would not restore by itself (layouts.json: control_model.).
    assert (folder / SIDECAR).is_file() == (prefix == "")
    convert_layout(back, tmp_path / "again", to="diffusers", config_dir=config)
    weights = "diffusion_pytorch_model.safetensors"
    assert file_tensors(tmp_path / "again" / weights) == file_tensors(folder / weights)
    convert_layout(tmp_path / "again", tmp_path / "again.safetensors", to="single-file")
    assert file_tensors(tmp_path / "again.safetensors") == file_tensors(orig)


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_from_elsewhere_goes_to_control_model_layout_and_back(tmp_path, family):
    """A diffusers folder with no sidecar -> ``control_model.*`` (lllyasviel's ControlNet 1.1
    layout) that diffusers' from_single_file reads into the same tensors -> the same folder."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(1)
    ControlNetModel.from_config(_config(family)).save_pretrained(str(tmp_path / "theirs"))
    want = file_tensors(tmp_path / "theirs" / "diffusion_pytorch_model.safetensors")
    single = tmp_path / "cn.safetensors"
    convert_layout(tmp_path / "theirs", single, to="single-file")
    names = list(file_tensors(single))
    assert names and all(n.startswith("control_model.") for n in names)
    loaded = ControlNetModel.from_single_file(str(single), config=str(tmp_path / "theirs"), local_files_only=True,
                                              low_cpu_mem_usage=False)
    got = {k: tensor_key(v) for k, v in loaded.state_dict().items()}
    assert {k for k in want if want[k] != got[k]} <= UNMAPPED_BY_DIFFUSERS.get(family, set())
    convert_layout(single, tmp_path / "again", to="diffusers", config_dir=tmp_path / "theirs")
    assert file_tensors(tmp_path / "again" / "diffusion_pytorch_model.safetensors") == want
    assert file_tensors(tmp_path / "again" / SIDECAR) == {}  # only the file's ModelSpec metadata, kept


def test_sdxl_modelspec_and_catalogue_choice(tmp_path, converted):
    """The SDXL ControlNet is recognised from its tensors (context 2048, pooled 2816): the way back
    writes SDXL ModelSpec metadata, and without --config the catalogue's SDXL config is chosen (a
    tiny file lacks most of its tensors: a clear error, nothing written)."""
    from safetensors import safe_open

    orig, _, _, back = converted[("sdxl", "")]
    with safe_open(str(back), "np") as fh:
        meta = fh.metadata()
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/controlnet"
    assert meta["modelspec.resolution"] == "1024x1024"
    r = subprocess.run([sys.executable, "-m", "assetkit", "convert", str(orig), str(tmp_path / "out"),
                        "--to", "diffusers"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "the controlnet-sdxl layout needs are missing" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_both_ways_json(tmp_path):
    config = save_config("sdxl", tmp_path / "config")
    orig = write_original("sdxl", "control_model.", tmp_path / "cn.safetensors", seed=3)
    cli = [sys.executable, "-m", "assetkit", "convert"]
    r = subprocess.run([*cli, str(orig), str(tmp_path / "d"), "--to", "diffusers", "--config", str(config), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["family"] == "sdxl" and list(doc["components"]) == ["controlnet"] and doc["extras"] == []
    r = subprocess.run([*cli, str(tmp_path / "d"), str(tmp_path / "b.safetensors"), "--to", "single-file", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layout"] == "controlnet"
    assert file_tensors(tmp_path / "b.safetensors") == file_tensors(orig)


@pytest.mark.parametrize("fixture_id", ["controlnet_sd15", "controlnet_sdxl", "controlnet_sdxl_unprefixed"])
def test_full_size_names_and_shapes_equal_diffusers_converter(tmp_path, fixture_id):
    """Full-size layouts (sparse files, headers only): our plan and diffusers' own ControlNet
    converter (run on meta tensors) give the same names and shapes, except the SDXL
    ``add_embedding`` that diffusers' converter does not produce."""
    import torch
    from diffusers.loaders import single_file_utils as sfu

    from assetkit.convert import plan_single_file_to_diffusers
    from assetkit.factory import make_fixture
    from assetkit.formats import open_asset

    with open_asset(make_fixture(fixture_id, tmp_path, full=True)) as asset:
        plan = plan_single_file_to_diffusers(asset)
        ckpt = {n: torch.empty(i.shape, dtype=torch.float16, device="meta") for n, i in asset.tensors.items()}
    comp = plan.components["controlnet"]
    theirs = {k: tuple(v.shape) for k, v in sfu.convert_controlnet_checkpoint(ckpt, comp.config).items()}
    ours = {t.name: t.shape for t in comp.tensors}
    family = "sdxl" if "sdxl" in fixture_id else "sd1"
    assert set(ours) - set(theirs) == UNMAPPED_BY_DIFFUSERS.get(family, set())
    assert {k: v for k, v in ours.items() if k in theirs} == theirs


def test_loose_diffusers_named_controlnet_file(tmp_path):
    """A lone diffusers-named ControlNet file -> ``control_model.*`` names that diffusers reads into
    the same tensors; wrapped as a folder it goes back to the same ``control_model.*`` file (its
    sidecar keeps the file's metadata but records no prefix: diffusers names have none to restore)."""
    import shutil

    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(2)
    ControlNetModel.from_config(_config("sd2")).save_pretrained(str(tmp_path / "theirs"))
    loose = tmp_path / "cn-diffusers.safetensors"
    shutil.copy(tmp_path / "theirs" / "diffusion_pytorch_model.safetensors", loose)
    want = file_tensors(loose)
    summary = convert_layout(loose, tmp_path / "cn.safetensors", to="single-file", config_dir=tmp_path / "theirs")
    assert summary["extras"] == []
    single = file_tensors(tmp_path / "cn.safetensors")
    assert len(single) == len(want) and all(n.startswith("control_model.") for n in single)
    loaded = ControlNetModel.from_single_file(str(tmp_path / "cn.safetensors"), config=str(tmp_path / "theirs"),
                                              local_files_only=True, low_cpu_mem_usage=False)
    assert {k: tensor_key(v) for k, v in loaded.state_dict().items()} == want
    convert_layout(loose, tmp_path / "wrapped", to="diffusers", config_dir=tmp_path / "theirs")
    assert (tmp_path / "wrapped" / SIDECAR).is_file()
    assert file_tensors(tmp_path / "wrapped" / "diffusion_pytorch_model.safetensors") == want
    convert_layout(tmp_path / "wrapped", tmp_path / "back.safetensors", to="single-file")
    assert file_tensors(tmp_path / "back.safetensors") == single


def test_drop_extras_says_the_prefix_is_not_kept(converted, tmp_path):
    orig, config, _, _ = converted[("sd1", "")]
    summary = convert_layout(orig, tmp_path / "clean", to="diffusers", config_dir=config, drop_extras=True)
    assert not (tmp_path / "clean" / SIDECAR).exists()
    assert any("controlnet: control_model." in n for n in summary["notes"])
    convert_layout(tmp_path / "clean", tmp_path / "back.safetensors", to="single-file")
    assert file_tensors(tmp_path / "back.safetensors") == {"control_model." + k: v for k, v in file_tensors(orig).items()}
