"""Single original-layout file <-> diffusers folder, against diffusers itself.

Tiny pipelines are saved by diffusers; our single file made from them must load through
diffusers' own ``from_single_file(config=<the folder>)`` into the very same tensors, and our
diffusers folder made from that file must hold the same bytes as diffusers' folder. Round trips
are compared byte for byte through the safetensors library.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from _layouts_helpers import (
    file_tensors,
    folder_tensors,
    pipeline_tensors,
    read_json,
    save_tiny_sd2_pipeline,
    save_tiny_sdxl_pipeline,
)

from assetkit.convert import (
    SIDECAR,
    LayoutError,
    plan_diffusers_to_single_file,
    plan_single_file_to_diffusers,
    write_diffusers_folder,
    write_single_file,
)
from assetkit.formats import open_asset

FAMILIES = ("sd1", "sd2", "sdxl")


def _save(family: str, dest: Path) -> Path:
    from assetkit.factory.diffusers_models import save_tiny_sd1_pipeline

    if family == "sd1":
        return save_tiny_sd1_pipeline(dest, decisive_dims=False)
    if family == "sd2":
        return save_tiny_sd2_pipeline(dest)
    return save_tiny_sdxl_pipeline(dest)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> (diffusers folder saved by diffusers, our single file made from it)."""
    out = {}
    for family in FAMILIES:
        root = tmp_path_factory.mktemp(f"tiny-{family}")
        folder = _save(family, root / "diffusers")
        with open_asset(folder) as asset:
            write_single_file(plan_diffusers_to_single_file(asset), asset, root / "single.safetensors")
        out[family] = (folder, root / "single.safetensors")
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assetkit", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_our_single_file_loads_in_diffusers_from_single_file_bit_exact(tiny, family):
    import diffusers

    folder, single = tiny[family]
    cls = getattr(diffusers, read_json(folder / "model_index.json")["_class_name"])
    pipe = cls.from_single_file(str(single), config=str(folder), local_files_only=True)
    theirs = pipeline_tensors(pipe)
    ours = folder_tensors(folder)
    assert set(ours) <= set(theirs)
    assert [k for k in ours if ours[k] != theirs[k]] == []


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_to_diffusers_equals_diffusers_and_loads_cleanly(tiny, family, tmp_path):
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    folder, single = tiny[family]
    with open_asset(single) as asset:
        plan = plan_single_file_to_diffusers(asset, config_dir=folder)
        write_diffusers_folder(plan, asset, tmp_path / "out")
    assert folder_tensors(tmp_path / "out") == folder_tensors(folder)
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Grab(level=logging.WARNING)
    old = dlogging.get_verbosity(), tlogging.get_verbosity()
    dlogging.set_verbosity_warning()
    tlogging.set_verbosity_warning()
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).addHandler(handler)
    try:
        pipe = DiffusionPipeline.from_pretrained(tmp_path / "out", local_files_only=True)
    finally:
        for name in ("diffusers", "transformers"):
            logging.getLogger(name).removeHandler(handler)
        dlogging.set_verbosity(old[0])
        tlogging.set_verbosity(old[1])
    bad = [m for m in records if any(w in m.lower() for w in ("missing", "unexpected", "not used", "newly initialized",
                                                               "not initialized"))]
    assert bad == []
    assert pipeline_tensors(pipe).keys() >= folder_tensors(folder).keys()


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_original_diffusers_original_is_bit_identical(tiny, family, tmp_path):
    folder, single = tiny[family]
    with open_asset(single) as asset:
        write_diffusers_folder(plan_single_file_to_diffusers(asset, config_dir=folder), asset, tmp_path / "d")
    with open_asset(tmp_path / "d") as asset:
        write_single_file(plan_diffusers_to_single_file(asset), asset, tmp_path / "back.safetensors")
    assert file_tensors(tmp_path / "back.safetensors") == file_tensors(single)
    # and diffusers -> original -> diffusers
    assert folder_tensors(tmp_path / "d") == folder_tensors(folder)


def _with_extras(single: Path, dest: Path, extra: dict) -> Path:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(single))
    tensors.update(extra)
    save_file(tensors, str(dest))
    return dest


def test_sd2_extras_go_to_the_sidecar_and_come_back(tiny, tmp_path):
    """SD2 768-v: the 24th text block (here the 2nd of a 1-layer config), text_projection,
    logit_scale, position ids and schedule buffers have no diffusers place: kept, not dropped."""
    import numpy as np

    folder, single = tiny["sd2"]
    rng = np.random.default_rng(0)
    p = "cond_stage_model.model."
    blocks = {k.replace("resblocks.0.", "resblocks.1."): rng.standard_normal(v.shape).astype(v.dtype)
              for k, v in __import__("safetensors.numpy", fromlist=["load_file"]).load_file(str(single)).items()
              if "resblocks.0." in k}
    extra = {**blocks, p + "text_projection": rng.standard_normal((32, 16)).astype("float32"),
             p + "logit_scale": np.array(4.6052, dtype="float32"),
             "betas": rng.random(1000).astype("float32"), "alphas_cumprod": rng.random(1000).astype("float32"),
             "junk.unknown_key": np.arange(5, dtype="int64")}
    src = _with_extras(single, tmp_path / "sd2-full.safetensors", extra)
    with open_asset(src) as asset:
        plan = plan_single_file_to_diffusers(asset, config_dir=folder)
        assert set(plan.extras) == set(extra)
        summary = write_diffusers_folder(plan, asset, tmp_path / "d")
    assert set(summary["extras"]) == set(extra)
    assert set(file_tensors(tmp_path / "d" / SIDECAR)) == set(extra)
    assert folder_tensors(tmp_path / "d") == folder_tensors(folder)  # the sidecar is not a component
    with open_asset(tmp_path / "d") as asset:
        write_single_file(plan_diffusers_to_single_file(asset), asset, tmp_path / "back.safetensors")
    assert file_tensors(tmp_path / "back.safetensors") == file_tensors(src)


def test_drop_extras_and_lacking_reported_never_invented(tiny, tmp_path):
    import numpy as np

    folder, single = tiny["sd2"]
    src = _with_extras(single, tmp_path / "x.safetensors", {"cond_stage_model.model.logit_scale": np.array(1.0, "float32")})
    r = _cli("convert", str(src), str(tmp_path / "d"), "--to", "diffusers", "--config", str(folder), "--drop-extras",
             "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["extras"] == ["cond_stage_model.model.logit_scale"] and doc["extras_dropped"] is True
    assert not (tmp_path / "d" / SIDECAR).exists()
    r = _cli("convert", str(tmp_path / "d"), str(tmp_path / "back.safetensors"), "--to", "single-file", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert "cond_stage_model.model.logit_scale" in doc["lacking"]
    back = file_tensors(tmp_path / "back.safetensors")
    assert "cond_stage_model.model.logit_scale" not in back and "cond_stage_model.model.text_projection" not in back
    assert back == file_tensors(single)


def test_single_file_metadata_is_modelspec(tiny, tmp_path):
    import hashlib

    from safetensors import safe_open

    folder, single = tiny["sdxl"]
    with safe_open(str(single), "np") as fh:
        meta = fh.metadata()
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    assert meta["modelspec.prediction_type"] == "epsilon"
    for key in ("modelspec.implementation", "modelspec.title", "modelspec.resolution"):
        assert meta[key]
    # sha256 of the tensor data region, in file order
    with open_asset(single) as asset:
        ordered = b"".join(bytes(asset.tensor_bytes(n)) for n in sorted(asset.tensors, key=lambda n: asset.tensors[n].data_offset))
    assert meta["modelspec.hash_sha256"] == "0x" + hashlib.sha256(ordered).hexdigest()


def test_fp16_variant_and_dtype(tiny, tmp_path):
    import numpy as np

    folder, single = tiny["sd1"]
    r = _cli("convert", str(single), str(tmp_path / "d"), "--to", "diffusers", "--config", str(folder),
             "--variant", "fp16")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d" / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (tmp_path / "d" / "text_encoder" / "model.fp16.safetensors").is_file()
    ours = folder_tensors(tmp_path / "d")
    theirs = folder_tensors(folder)
    for key, (_, shape, raw) in theirs.items():
        assert ours[key][0] == "torch.float16" and ours[key][1] == shape
        want = np.frombuffer(raw, "<f4").astype("<f2").tobytes()
        assert ours[key][2] == want, key
    with open_asset(tmp_path / "d", variant="fp16") as asset:
        assert {i.dtype for i in asset.tensors.values()} == {"F16"}


def test_component_extraction_and_replace(tiny, tmp_path):
    folder, single = tiny["sd1"]
    cfg = ("--config", str(folder))
    r = _cli("convert", str(single), str(tmp_path / "vae.safetensors"), "--to", "single-file", "--component", "vae", *cfg)
    assert r.returncode == 0, r.stderr
    vae = file_tensors(tmp_path / "vae.safetensors")
    full = file_tensors(single)
    assert vae == {k[len("first_stage_model."):]: v for k, v in full.items() if k.startswith("first_stage_model.")}
    # a standalone VAE file -> a diffusers component folder equal to diffusers' own
    r = _cli("convert", str(tmp_path / "vae.safetensors"), str(tmp_path / "vae_d"), "--to", "diffusers",
             "--config", str(folder / "vae"))
    assert r.returncode == 0, r.stderr
    assert file_tensors(tmp_path / "vae_d" / "diffusion_pytorch_model.safetensors") == file_tensors(
        folder / "vae" / "diffusion_pytorch_model.safetensors")
    # --component on a diffusers folder
    r = _cli("convert", str(folder), str(tmp_path / "vae2.safetensors"), "--to", "single-file", "--component", "vae")
    assert r.returncode == 0, r.stderr
    assert file_tensors(tmp_path / "vae2.safetensors") == vae
    # bake another VAE in: from a second tiny SD1 with another seed, as a diffusers component folder
    from assetkit.factory.diffusers_models import save_tiny_component

    other = save_tiny_component("vae", tmp_path / "other_vae", seed=7)
    r = _cli("convert", str(single), str(tmp_path / "baked.safetensors"), "--to", "single-file",
             "--replace", f"vae={other}", *cfg)
    assert r.returncode == 0, r.stderr
    baked = file_tensors(tmp_path / "baked.safetensors")
    assert set(baked) == set(full)
    assert all(baked[k] == full[k] for k in full if not k.startswith("first_stage_model."))
    assert any(baked[k] != full[k] for k in full if k.startswith("first_stage_model."))
    r = _cli("convert", str(tmp_path / "baked.safetensors"), str(tmp_path / "vae3.safetensors"), "--to",
             "single-file", "--component", "vae", *cfg)
    r2 = _cli("convert", str(other), str(tmp_path / "vae4.safetensors"), "--to", "single-file")
    assert r.returncode == 0 and r2.returncode == 0, r.stderr + r2.stderr
    assert file_tensors(tmp_path / "vae3.safetensors") == file_tensors(tmp_path / "vae4.safetensors")
    # shape-incompatible replacement: refused before anything is written
    from assetkit.factory.diffusers_models import tiny_vae

    tiny_vae(latent_channels=8).save_pretrained(str(tmp_path / "vae8"))  # 8 latent channels: other shapes
    r = _cli("convert", str(single), str(tmp_path / "bad.safetensors"), "--to", "single-file",
             "--replace", f"vae={tmp_path / 'vae8'}", *cfg)
    assert r.returncode == 2 and "assetkit: error:" in r.stderr and "not compatible" in r.stderr
    assert not (tmp_path / "bad.safetensors").exists()


def test_unknown_layout_lists_what_was_found_and_families(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    src = tmp_path / "weird.safetensors"
    save_file({"encoder.block.0.weight": np.zeros((2, 2), "float32"), "head.bias": np.zeros(2, "float32")}, str(src))
    r = _cli("convert", str(src), str(tmp_path / "out"), "--to", "diffusers")
    assert r.returncode == 2
    line = r.stderr.strip()
    assert line.startswith("assetkit: error:") and "\n" not in line
    assert "unknown layout" in line and "encoder.block" in line and "sd1" in line and "sdxl" in line
    assert not (tmp_path / "out").exists()


def test_missing_tensors_are_listed_not_invented(tiny, tmp_path):
    from safetensors.numpy import load_file, save_file

    folder, single = tiny["sd1"]
    tensors = load_file(str(single))
    gone = ["model.diffusion_model.out.2.weight", "first_stage_model.decoder.conv_in.bias"]
    for name in gone:
        del tensors[name]
    src = tmp_path / "holes.safetensors"
    save_file(tensors, str(src))
    with open_asset(src) as asset, pytest.raises(LayoutError) as err:
        plan_single_file_to_diffusers(asset, config_dir=folder)
    assert all(name in str(err.value) for name in gone) and "2 tensors" in str(err.value)
    r = _cli("convert", str(src), str(tmp_path / "out"), "--to", "diffusers", "--config", str(folder))
    assert r.returncode == 2 and not (tmp_path / "out").exists()


def test_unsafe_pickle_is_refused(tmp_path):
    import os

    import torch

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.out.2.weight": torch.ones(1)}, "x": Payload()}, src)
    r = _cli("convert", str(src), str(tmp_path / "out"), "--to", "diffusers")
    assert r.returncode == 1 and "refusing" in r.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_pickle_source_converts_like_safetensors(tiny, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder, single = tiny["sd1"]
    src = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(single)), "global_step": 470000}, src)
    r = _cli("convert", str(src), str(tmp_path / "d"), "--to", "diffusers", "--config", str(folder))
    assert r.returncode == 0, r.stderr
    assert folder_tensors(tmp_path / "d") == folder_tensors(folder)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "d" / SIDECAR), "np") as fh:  # position_ids live there, and the plain values
        assert json.loads(fh.metadata()["assetkit.plain_metadata"])["global_step"] == 470000


def test_file_and_configs_that_do_not_fit_are_refused(tiny, tmp_path):
    """Names alone match (same block structure), widths do not: refused before writing."""
    folder, single = tiny["sd1"]
    other = tmp_path / "configs"
    import shutil

    shutil.copytree(folder, other, ignore=shutil.ignore_patterns("*.safetensors"))
    cfg = json.loads((other / "unet" / "config.json").read_text())
    cfg["block_out_channels"] = [64, 128]
    (other / "unet" / "config.json").write_text(json.dumps(cfg))
    r = _cli("convert", str(single), str(tmp_path / "out"), "--to", "diffusers", "--config", str(other))
    assert r.returncode == 2 and "does not fit the configs" in r.stderr and "unet/conv_in.weight" in r.stderr
    assert not (tmp_path / "out").exists()


def test_fp16_variant_folder_back_to_single_file(tiny, tmp_path):
    folder, single = tiny["sdxl"]
    r = _cli("convert", str(single), str(tmp_path / "d"), "--to", "diffusers", "--config", str(folder),
             "--variant", "fp16")
    assert r.returncode == 0, r.stderr
    r = _cli("convert", str(tmp_path / "d"), str(tmp_path / "half.safetensors"), "--to", "single-file",
             "--variant", "fp16", "--json")
    assert r.returncode == 0, r.stderr
    half = file_tensors(tmp_path / "half.safetensors")
    full = file_tensors(single)
    assert half.keys() == full.keys()
    assert {v[0] for v in half.values()} == {"torch.float16"}


@pytest.mark.parametrize("prefixed", [True, False])
def test_controlnet_both_ways_against_diffusers(tmp_path, prefixed):
    """A tiny ControlNet saved by diffusers -> our original-layout file (``control_model.`` or
    prefix-less) -> diffusers' own from_single_file gives the same tensors; and back to a folder."""
    import torch
    from diffusers import ControlNetModel
    from safetensors.numpy import load_file, save_file

    torch.manual_seed(0)
    model = ControlNetModel(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32,
                            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), attention_head_dim=2,
                            cross_attention_dim=32, conditioning_embedding_out_channels=(16, 32))
    model.save_pretrained(str(tmp_path / "cn"))
    single = tmp_path / "cn.safetensors"
    r = _cli("convert", str(tmp_path / "cn"), str(single), "--to", "single-file")
    assert r.returncode == 0, r.stderr
    names = list(file_tensors(single))
    assert names and all(n.startswith("control_model.") for n in names)  # no sidecar: ControlNet 1.1's layout
    if not prefixed:
        save_file({k.removeprefix("control_model."): v for k, v in load_file(str(single)).items()}, str(single))
    theirs = ControlNetModel.from_single_file(str(single), config=str(tmp_path / "cn"), local_files_only=True,
                                             low_cpu_mem_usage=False)  # accelerate (from peft) would meta-init
    from _layouts_helpers import tensor_key

    want = file_tensors(tmp_path / "cn" / "diffusion_pytorch_model.safetensors")
    assert {k: tensor_key(v) for k, v in theirs.state_dict().items()} == want
    r = _cli("convert", str(single), str(tmp_path / "back"), "--to", "diffusers", "--config", str(tmp_path / "cn"))
    assert r.returncode == 0, r.stderr
    assert file_tensors(tmp_path / "back" / "diffusion_pytorch_model.safetensors") == want


def test_layout_conversion_imports_neither_torch_nor_diffusers(tiny, tmp_path):
    folder, single = tiny["sd2"]
    code = ("import sys\n"
            "from assetkit.convert import convert_layout\n"
            f"convert_layout({str(single)!r}, {str(tmp_path / 'd')!r}, to='diffusers', config_dir={str(folder)!r})\n"
            f"convert_layout({str(tmp_path / 'd')!r}, {str(tmp_path / 'b.safetensors')!r}, to='single-file')\n"
            "assert not {'torch', 'diffusers', 'transformers'} & set(sys.modules), sorted(sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert file_tensors(tmp_path / "b.safetensors") == file_tensors(single)


def test_component_to_diffusers_and_existing_output(tiny, tmp_path):
    folder, single = tiny["sdxl"]
    r = _cli("convert", str(single), str(tmp_path / "te2"), "--to", "diffusers", "--config", str(folder),
             "--component", "text_encoder_2")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "te2").iterdir()) == ["config.json", "model.safetensors"]
    assert file_tensors(tmp_path / "te2" / "model.safetensors") == file_tensors(
        folder / "text_encoder_2" / "model.safetensors")
    r = _cli("convert", str(single), str(tmp_path / "te2"), "--to", "diffusers", "--config", str(folder))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    r = _cli("convert", str(single), str(tmp_path / "te2"), "--to", "diffusers", "--config", str(folder),
             "--overwrite", "--json")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["components"]) >= {"unet", "vae", "text_encoder", "text_encoder_2"}
    assert (tmp_path / "te2" / "model_index.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_standalone_vae_with_prefix_and_extras_round_trips(tiny, tmp_path):
    """A VAE file with the ``first_stage_model.`` prefix and an EMA counter: the component folder
    keeps the extra in its sidecar and the way back restores names and bytes exactly."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    folder, single = tiny["sd1"]
    vae = {k: v for k, v in load_file(str(single)).items() if k.startswith("first_stage_model.")}
    vae["model_ema.num_updates"] = np.array(1234, dtype="int64")
    src = tmp_path / "vae.safetensors"
    save_file(vae, str(src))
    r = _cli("convert", str(src), str(tmp_path / "v"), "--to", "diffusers", "--config", str(folder / "vae"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["extras"] == ["model_ema.num_updates"]
    assert file_tensors(tmp_path / "v" / SIDECAR).keys() == {"model_ema.num_updates"}
    assert file_tensors(tmp_path / "v" / "diffusion_pytorch_model.safetensors") == file_tensors(
        folder / "vae" / "diffusion_pytorch_model.safetensors")
    r = _cli("convert", str(tmp_path / "v"), str(tmp_path / "back.safetensors"), "--to", "single-file")
    assert r.returncode == 0, r.stderr
    assert file_tensors(tmp_path / "back.safetensors") == file_tensors(src)


@pytest.mark.parametrize("projection", [False, True])
def test_standalone_open_clip_text_encoder_against_diffusers_converter(tmp_path, projection):
    """A bare open_clip text tower (``transformer.resblocks.*``, fused in_proj, transposed
    text_projection) made from a transformers model; diffusers' open_clip converter on our file
    gives the model's own tensors, and our conversion back gives the same folder."""
    import torch
    from _layouts_helpers import tensor_key
    from diffusers.loaders import single_file_utils as sfu
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    model = cls(CLIPTextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
                               projection_dim=32))
    model.save_pretrained(str(tmp_path / "te"))
    r = _cli("convert", str(tmp_path / "te"), str(tmp_path / "te.safetensors"), "--to", "single-file")
    assert r.returncode == 0, r.stderr
    ours = load_file(str(tmp_path / "te.safetensors"))
    assert "transformer.resblocks.1.attn.in_proj_weight" in ours and ("text_projection" in ours) == projection
    prefix = "conditioner.embedders.1.model."
    theirs = sfu.convert_open_clip_checkpoint(model, {prefix + k: v for k, v in ours.items()}, prefix=prefix)
    want = {k: tensor_key(v) for k, v in model.state_dict().items()}
    got = {k: tensor_key(v) for k, v in theirs.items()}
    if not projection:
        got = {k.removeprefix("text_model."): v for k, v in got.items()}
    assert {k: got[k] for k in want} == want
    r = _cli("convert", str(tmp_path / "te.safetensors"), str(tmp_path / "back"), "--to", "diffusers",
             "--config", str(tmp_path / "te"))
    assert r.returncode == 0, r.stderr
    assert file_tensors(tmp_path / "back" / "model.safetensors") == file_tensors(tmp_path / "te" / "model.safetensors")


@pytest.mark.slow
def test_asymmetric_unet_config_both_ways_against_diffusers(tmp_path):
    """An SSD-1B/Vega-style SDXL UNet (per-layer transformer depths, its own reversed list for the
    up blocks) goes to a single file diffusers' from_single_file reads into the same tensors, and
    back to the same folder, with the model's own configs."""
    import diffusers
    import torch
    from diffusers import UNet2DConditionModel

    folder = save_tiny_sdxl_pipeline(tmp_path / "asym")
    config = {k: v for k, v in read_json(folder / "unet" / "config.json").items() if not k.startswith("_")}
    config |= {"layers_per_block": 2, "transformer_layers_per_block": [1, [2, 1]],
               "reverse_transformer_layers_per_block": [[1, 2, 1], [1, 1, 1]]}
    torch.manual_seed(1)
    UNet2DConditionModel(**config).save_pretrained(str(folder / "unet"))
    single = tmp_path / "asym.safetensors"
    assert _cli("convert", str(folder), str(single), "--to", "single-file").returncode == 0
    names = file_tensors(single)
    assert "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight" in names  # depth 2
    assert "model.diffusion_model.input_blocks.5.1.transformer_blocks.1.attn1.to_q.weight" not in names  # depth 1
    theirs = pipeline_tensors(diffusers.StableDiffusionXLPipeline.from_single_file(
        str(single), config=str(folder), local_files_only=True))
    ours = folder_tensors(folder)
    assert [k for k in ours if ours[k] != theirs.get(k)] == []
    result = _cli("convert", str(single), str(tmp_path / "back"), "--to", "diffusers", "--config", str(folder))
    assert result.returncode == 0, result.stderr
    assert folder_tensors(tmp_path / "back") == ours


def test_per_layer_depths_without_their_reverse_are_refused_in_one_line(tmp_path):
    folder = save_tiny_sdxl_pipeline(tmp_path / "asym")
    config = read_json(folder / "unet" / "config.json") | {"transformer_layers_per_block": [1, [2, 1]]}
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    result = _cli("convert", str(folder), str(tmp_path / "out.safetensors"), "--to", "single-file")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"assetkit: error: {folder / 'unet' / 'config.json'}: cannot map this unet config: "
        "transformer_layers_per_block has per-layer lists but the config has no reverse_transformer_layers_per_block (diffusers needs it for such a UNet too)"]
    assert not (tmp_path / "out.safetensors").exists()


def test_overwrite_replaces_an_existing_single_file(tiny, tmp_path):
    """--to single-file --overwrite replaces the output (it used to say "pass --overwrite" anyway)."""
    folder, single = tiny["sd1"]
    out = tmp_path / "back.safetensors"
    out.write_bytes(b"old")
    r = _cli("convert", str(folder), str(out), "--to", "single-file")
    assert r.returncode == 2 and "--overwrite" in r.stderr and out.read_bytes() == b"old"
    r = _cli("convert", str(folder), str(out), "--to", "single-file", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert file_tensors(out) == file_tensors(single)
    for extra in (("--component", "vae"), ("--replace", f"vae={folder / 'vae'}")):  # single file -> single file
        out.write_bytes(b"old")
        r = _cli("convert", str(single), str(out), "--to", "single-file", "--config", str(folder), *extra, "--overwrite")
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() != b"old"


def test_variant_contradicting_dtype_is_a_usage_error(tiny, tmp_path):
    """--to diffusers --variant fp16 --dtype bf16 used to write bf16 data into *.fp16.safetensors (exit 0)."""
    folder, single = tiny["sd1"]
    r = _cli("convert", str(single), str(tmp_path / "d"), "--to", "diffusers", "--config", str(folder),
             "--variant", "fp16", "--dtype", "bf16")
    assert r.returncode == 2 and "--variant fp16" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
    r = _cli("convert", str(single), str(tmp_path / "d"), "--to", "diffusers", "--config", str(folder),
             "--variant", "fp16", "--dtype", "fp16")
    assert r.returncode == 0, r.stderr


def test_output_folder_mode_follows_the_umask(tiny, tmp_path):
    """The folder is built in a mkdtemp staging folder (0o700) and renamed: it used to stay 0o700,
    unreadable to anyone else, while its files and subfolders follow the umask."""
    import os

    folder, single = tiny["sd1"]
    old = os.umask(0o022)
    try:
        for out, extra in ((tmp_path / "d", ()), (tmp_path / "vae", ("--component", "vae"))):
            r = _cli("convert", str(single), str(out), "--to", "diffusers", "--config", str(folder), *extra)
            assert r.returncode == 0, r.stderr
            assert out.stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)


def test_missing_config_folder_is_named(tiny, tmp_path):
    folder, single = tiny["sd1"]
    r = _cli("convert", str(single), str(tmp_path / "d"), "--to", "diffusers", "--config", str(tmp_path / "nope"))
    assert r.returncode == 2 and "config folder does not exist" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_overwrite_never_replaces_the_folder_holding_the_source(tiny, tmp_path):
    """``convert models/sd/sd.safetensors models/sd --to diffusers --overwrite`` used to delete the source."""
    folder, single = tiny["sd1"]
    (tmp_path / "sd").mkdir()
    src = tmp_path / "sd" / "sd.safetensors"
    src.write_bytes(single.read_bytes())
    r = _cli("convert", str(src), str(tmp_path / "sd"), "--to", "diffusers", "--config", str(folder), "--overwrite")
    assert r.returncode == 2 and "inside the output folder" in r.stderr, r.stderr
    assert src.read_bytes() == single.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sd"]


def test_round_trip_keeps_the_source_metadata_byte_for_byte(tiny, tmp_path):
    """The source's metadata recorded in the sidecar comes back on the way to a single file (it was
    dropped: ModelSpec was regenerated with the folder's name as title, kohya ``ss_*`` and a
    pickle's ``global_step`` were lost), so the round trip gives the same file, byte for byte."""
    import struct

    from safetensors import safe_open

    folder, single = tiny["sd1"]
    raw = single.read_bytes()  # our single file (tensor order ours) with more metadata in its header
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    header["__metadata__"].update({"ss_output_name": "mine", "license": "x"})
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    src = tmp_path / "model.safetensors"
    src.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size:])
    for name in ("d", "d2"):  # folder named unlike the source: the title is the source's
        r = _cli("convert", str(src), str(tmp_path / name), "--to", "diffusers", "--config", str(folder))
        assert r.returncode == 0, r.stderr
    r = _cli("convert", str(tmp_path / "d"), str(tmp_path / "back.safetensors"), "--to", "single-file")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.safetensors").read_bytes() == src.read_bytes()
    r = _cli("convert", str(tmp_path / "d2"), str(tmp_path / "vae.safetensors"), "--to", "single-file",
             "--component", "vae")  # an extract gets its own ModelSpec, not the pipeline's
    assert r.returncode == 0, r.stderr
    with safe_open(str(tmp_path / "vae.safetensors"), "np") as fh:
        assert fh.metadata()["modelspec.architecture"].endswith("/vae") and "ss_output_name" not in fh.metadata()
