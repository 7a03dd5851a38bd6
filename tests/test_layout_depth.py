"""SD2-depth (``512-depth-ema.ckpt``) between the original layout and diffusers, both ways.

Two independent sources: the factory writes a tiny original-layout checkpoint (the 5-channel
UNet, VAE, OpenCLIP text tower and the MiDaS DPT-Hybrid under ``depth_model.model.``, names from
the reference implementations) and diffusers/transformers save a ``StableDiffusionDepth2ImgPipeline``
of the same widths (its depth estimator's names are transformers' own). Our diffusers folder must
load through ``from_pretrained`` with no missing or unexpected key and hold the source's bytes;
round trips both ways are compared name by name (dtype, shape, bytes) through safetensors.
"""

from __future__ import annotations

import pytest
from _layouts_helpers import file_tensors, folder_tensors, pipeline_tensors

from assetkit.convert import SIDECAR, LayoutError, plan_single_file_to_diffusers
from assetkit.convert.layout_convert import component_rules, convert_layout
from assetkit.factory.depth import (
    save_tiny_sd2_depth_pipeline,
    tiny_midas,
    write_tiny_sd2_depth_original,
)
from assetkit.formats import open_asset

DEPTH = "depth_model.model."


@pytest.fixture(scope="module")
def depth(tmp_path_factory):
    """Paths: the factory's original file, the pipeline diffusers saved (also the --config folder),
    our diffusers folder from the file and our single file from the pipeline folder."""
    from assetkit.factory.diffusers_models import quiet_libraries

    quiet_libraries()
    root = tmp_path_factory.mktemp("depth")
    orig = write_tiny_sd2_depth_original(root / "orig.safetensors")
    pipe = save_tiny_sd2_depth_pipeline(root / "pipe")
    ours = root / "ours"
    convert_layout(orig, ours, to="diffusers", config_dir=pipe)
    single = root / "from-pipe.safetensors"
    convert_layout(pipe, single, to="single-file")
    return {"orig": orig, "pipe": pipe, "ours": ours, "single": single, "root": root}


def test_folder_loads_in_diffusers_with_no_missing_or_unexpected_keys_and_the_source_bytes(depth):
    from diffusers import AutoencoderKL, StableDiffusionDepth2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, DPTForDepthEstimation

    ours = depth["ours"]
    for sub, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
        _, info = cls.from_pretrained(str(ours / sub), local_files_only=True, low_cpu_mem_usage=False,
                                      output_loading_info=True)
        assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == [], sub
    for sub, cls in (("text_encoder", CLIPTextModel), ("depth_estimator", DPTForDepthEstimation)):
        _, info = cls.from_pretrained(str(ours / sub), local_files_only=True, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], sub
    pipe = StableDiffusionDepth2ImgPipeline.from_pretrained(str(ours), local_files_only=True)
    assert type(pipe.depth_estimator).__name__ == "DPTForDepthEstimation"
    loaded = pipeline_tensors(pipe)
    written = folder_tensors(ours)
    assert loaded == written  # every parameter of every module came from our files, unchanged
    # ... and our files hold the source's bytes: each target is its source tensor (or a third of a fused qkv).
    source = file_tensors(depth["orig"])
    with open_asset(depth["orig"]) as asset:
        plan = plan_single_file_to_diffusers(asset, config_dir=depth["pipe"])
    for name, comp in plan.components.items():
        for t in comp.tensors:
            (part,) = t.parts
            raw = source[part.source][2][part.start:part.stop]
            assert written[f"{name}/{t.name}"][2] == raw, t.name
    assert {p.source for c in plan.components.values() for t in c.tensors for p in t.parts} | set(plan.extras) \
        == set(source)


def test_round_trip_original_diffusers_original_is_bit_identical(depth, tmp_path):
    back = tmp_path / "back.safetensors"
    summary = convert_layout(depth["ours"], back, to="single-file")
    assert summary["layout"] == "sd2-depth" and summary["family"] == "sd2"
    assert summary["metadata"]["modelspec.architecture"] == "stable-diffusion-v2-512/depth"
    with open_asset(back) as asset:  # the ModelSpec says what the tiny widths cannot
        from assetkit.probe import probe

        result = probe(asset)
    assert (result.kind, result.family, result.variant, result.prediction_type) == ("pipeline", "sd2", "depth", "epsilon")
    assert file_tensors(back) == file_tensors(depth["orig"])
    assert (depth["ours"] / SIDECAR).is_file()  # the 2nd text block, text_projection, logit_scale


def test_round_trip_diffusers_original_diffusers_is_bit_identical(depth, tmp_path):
    again = tmp_path / "again"
    convert_layout(depth["single"], again, to="diffusers", config_dir=depth["pipe"])
    assert folder_tensors(again) == folder_tensors(depth["pipe"])


def test_transformers_saved_depth_estimator_goes_to_the_midas_names_and_back(depth):
    """Oracle for the depth-estimator map: transformers' DPTForDepthEstimation state_dict (saved by
    transformers) becomes exactly the MiDaS names and shapes the factory derives from the original
    DPT code; the fused qkv is query, key, value concatenated; spot checks of the renames
    transformers' ``convert_dpt_hybrid_to_pytorch.py`` makes."""
    single = file_tensors(depth["single"])
    depth_part = {k: v for k, v in single.items() if k.startswith(DEPTH)}
    assert {k: v[1] for k, v in depth_part.items()} == {k: tuple(d.shape) for k, d in tiny_midas().items()}
    hf = file_tensors(depth["pipe"] / "depth_estimator" / "model.safetensors")
    assert len(hf) == sum(3 if ".attn.qkv." in k else 1 for k in depth_part)
    for kind in ("weight", "bias"):
        fused = b"".join(hf[f"dpt.encoder.layer.2.attention.attention.{q}.{kind}"][2] for q in ("query", "key", "value"))
        assert depth_part[f"{DEPTH}pretrained.model.blocks.2.attn.qkv.{kind}"][2] == fused
    pairs = {"scratch.refinenet4.out_conv.weight": "neck.fusion_stage.layers.0.projection.weight",
             "scratch.refinenet1.resConfUnit2.conv1.bias": "neck.fusion_stage.layers.3.residual_layer2.convolution1.bias",
             "scratch.layer1_rn.weight": "neck.convs.0.weight",
             "scratch.output_conv.4.weight": "head.head.4.weight",
             "pretrained.act_postprocess4.4.weight": "neck.reassemble_stage.layers.3.resize.weight",
             "pretrained.act_postprocess3.0.project.0.weight": "neck.reassemble_stage.readout_projects.2.0.weight",
             "pretrained.model.norm.weight": "dpt.layernorm.weight",
             "pretrained.model.pos_embed": "dpt.embeddings.position_embeddings",
             "pretrained.model.patch_embed.backbone.stem.conv.weight":
                 "dpt.embeddings.backbone.bit.embedder.convolution.weight",
             "pretrained.model.patch_embed.backbone.stages.2.blocks.1.norm3.bias":
                 "dpt.embeddings.backbone.bit.encoder.stages.2.layers.1.norm3.bias",
             "pretrained.model.blocks.3.mlp.fc2.weight": "dpt.encoder.layer.3.output.dense.weight"}
    for original, theirs in pairs.items():
        assert depth_part[DEPTH + original] == hf[theirs], original


def test_full_size_rules_are_unambiguous_and_cover_the_released_model(depth):
    """The catalogue's sd2-depth depth_estimator config against the factory's full-size MiDaS names."""
    from assetkit.convert.keymap import check_rules
    from assetkit.convert.layout_convert import catalogue_configs
    from assetkit.factory import keys as K

    config = catalogue_configs("sd2-depth")["depth_estimator/config.json"]
    rules = component_rules("midas", config)
    assert check_rules(rules) == []
    assert {n for r in rules for n in r.original} == set(K.midas_dpt_hybrid(prefix=""))


def test_config_dir_keeps_every_file_of_weightless_components(depth):
    """--config DIR: the tokenizer (tokenizer.json and tokenizer_config.json), the feature
    extractor and the scheduler come out as the caller's files, byte for byte."""
    from transformers import CLIPTokenizer

    for comp in ("tokenizer", "feature_extractor", "scheduler"):
        theirs = {p.name: p.read_bytes() for p in (depth["pipe"] / comp).iterdir()}
        mine = {p.name: p.read_bytes() for p in (depth["ours"] / comp).iterdir()}
        assert mine == theirs, comp
    text = "a photo of a cat"
    assert CLIPTokenizer.from_pretrained(str(depth["ours"] / "tokenizer"))(text).input_ids == \
        CLIPTokenizer.from_pretrained(str(depth["pipe"] / "tokenizer"))(text).input_ids


def test_missing_depth_tensor_is_named_not_invented(depth, tmp_path):
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(depth["orig"]))
    gone = f"{DEPTH}scratch.refinenet2.out_conv.weight"
    del arrays[gone]
    path = tmp_path / "cut.safetensors"
    save_file(arrays, str(path))
    with pytest.raises(LayoutError, match="refinenet2.out_conv.weight"):
        convert_layout(path, tmp_path / "out", to="diffusers", config_dir=depth["pipe"])
    assert not (tmp_path / "out").exists()


def test_timm_classifier_head_goes_to_the_sidecar_and_back(depth, tmp_path):
    """MiDaS' timm ViT may keep its ImageNet ``head``: DPTForDepthEstimation has no place for it."""
    from safetensors.numpy import load_file, save_file

    from assetkit.factory import materialize

    extra = {k: v for k, v in materialize(tiny_midas(classifier=10), shrink=False).items() if ".model.head." in k}
    assert sorted(extra) == [f"{DEPTH}pretrained.model.head.bias", f"{DEPTH}pretrained.model.head.weight"]
    path = tmp_path / "with-head.safetensors"
    save_file({**load_file(str(depth["orig"])), **extra}, str(path))
    summary = convert_layout(path, tmp_path / "out", to="diffusers", config_dir=depth["pipe"])
    assert set(extra) <= set(summary["extras"])
    assert set(extra) <= set(file_tensors(tmp_path / "out" / SIDECAR))
    convert_layout(tmp_path / "out", tmp_path / "back.safetensors", to="single-file")
    assert file_tensors(tmp_path / "back.safetensors") == file_tensors(path)


def test_a_depth_config_without_a_key_map_is_one_line_exit_2(depth, tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    config = tmp_path / "config"
    shutil.copytree(depth["pipe"], config, ignore=shutil.ignore_patterns("*.safetensors"))
    cfg = json.loads((config / "depth_estimator" / "config.json").read_text())
    cfg["is_hybrid"] = False
    (config / "depth_estimator" / "config.json").write_text(json.dumps(cfg))
    run = subprocess.run([sys.executable, "-m", "assetkit", "convert", str(depth["orig"]), str(tmp_path / "out"),
                          "--to", "diffusers", "--config", str(config)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "is_hybrid" in run.stderr and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
