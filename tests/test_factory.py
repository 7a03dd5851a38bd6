"""The fixture factory writes what real checkpoints contain, through the real libraries.

Re-reading uses the independent libraries (``safetensors.safe_open``, ``torch.load`` on files this
test wrote), never assetkit's readers: the factory is the yardstick for those.
"""

from __future__ import annotations

import io
import json
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from assetkit.factory import FIXTURES, load_shared_layout, make_fixture, tiny_layout, write_sparse_safetensors
from assetkit.factory import keys as K
from assetkit.factory.layouts import TensorDecl, parameters, strip_prefix
from assetkit.factory.specs import LIGHTNING_CALLBACK
from assetkit.factory.writers import KEEP_REAL_NUMEL, safetensors_header, tiny_shape

KINDS = {"pipeline", "unet", "transformer", "vae", "text_encoder", "lora", "controlnet", "textual_inversion",
         "ip_adapter", "t2i_adapter", "unknown"}
FAMILIES = {"sd1", "sd2", "sdxl", "sdxl-refiner", "sd3", "flux"}
VARIANTS = {None, "inpaint", "depth", "instruct-pix2pix", "upscale"}
PREDICTIONS = {None, "epsilon", "v_prediction"}
LAYOUTS = {"original", "diffusers", "transformers", "open_clip", "kohya", "peft", "diffusers-attn-procs",
           "lycoris", "a1111"}

FILE_CASES = [(fid, c) for fid, spec in FIXTURES.items() for c in spec.containers if c != "diffusers"]
SHARED = ["sd15", "sd21_768v", "sdxl_base", "controlnet_sd15", "vae_sd", "lora_sd15_kohya"]


# --- helpers ---------------------------------------------------------------------------------------


def _safetensors_index(path: Path) -> tuple[dict[str, TensorDecl], dict[str, str]]:
    from safetensors import safe_open

    found: dict[str, TensorDecl] = {}
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata() or {}
        for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
            sliced = handle.get_slice(name)
            found[name] = TensorDecl(tuple(sliced.get_shape()), sliced.get_dtype())
    return found, metadata


_TORCH_TO_ST = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32"}


def _flatten(obj: Any, prefix: str = "") -> dict[str, TensorDecl]:
    import torch

    flat: dict[str, TensorDecl] = {}
    if isinstance(obj, torch.Tensor):
        flat[prefix.rstrip(".")] = TensorDecl(tuple(obj.shape), _TORCH_TO_ST[str(obj.dtype).removeprefix("torch.")])
    elif isinstance(obj, dict):
        for key, value in obj.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _torch_index(path: Path) -> tuple[dict[str, TensorDecl], Any]:
    import torch

    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    body = payload["state_dict"] if isinstance(payload, dict) and "state_dict" in payload else payload
    if isinstance(body, dict) and "string_to_param" in body:
        body = {"string_to_param": body["string_to_param"]}
    return _flatten(body), payload


def _pickle_globals(path: Path) -> set[str]:
    """Every global a torch file's pickles name (zip: data.pkl; legacy: the leading pickles)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            streams = [archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))]
    else:
        streams = [path.read_bytes()]
    found: set[str] = set()
    for data in streams:
        buffer = io.BytesIO(data)
        for _ in range(5 if not zipfile.is_zipfile(path) else 1):  # legacy: magic, protocol, info, obj, keys
            strings: list[str] = []
            for opcode, arg, _pos in pickletools.genops(buffer):
                if opcode.name == "GLOBAL":
                    found.add(arg.replace(" ", "."))
                elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                    strings.append(arg)
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.add(f"{strings[-2]}.{strings[-1]}")
    return found


# --- the catalogue itself ---------------------------------------------------------------------------


def test_every_expected_verdict_uses_the_shared_vocabulary() -> None:
    assert len(FIXTURES) >= 60
    for spec in FIXTURES.values():
        kind, family, variant, prediction, layout = spec.expected.verdict()
        assert kind in KINDS, spec.id
        assert family in FAMILIES or (family is None and spec.expected.family_candidates), spec.id
        assert set(spec.expected.family_candidates) <= FAMILIES, spec.id
        assert variant in VARIANTS and prediction in PREDICTIONS and layout in LAYOUTS, spec.id
        assert spec.containers and all(c in ("safetensors", "torch-zip", "torch-legacy", "diffusers")
                                       for c in spec.containers), spec.id


def test_prediction_type_is_stated_only_where_the_file_says_it() -> None:
    for spec in FIXTURES.values():
        if spec.expected.prediction_type is None:
            continue
        says = (spec.metadata.get("modelspec.prediction_type") or spec.expected.details.get("global_step")
                or "diffusers" in spec.containers)
        assert says, spec.id


def test_importing_the_factory_does_not_import_torch() -> None:
    code = "import sys, assetkit.factory, assetkit.cli.demo_cmd; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_make_fixture_rejects_wrong_container_and_unknown_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not come as"):
        make_fixture("flux_dev", tmp_path, "torch-legacy")
    with pytest.raises(KeyError, match="unknown fixture"):
        make_fixture("sd9", tmp_path)


# --- generators against the references -----------------------------------------------------------


def _full_sd(layout_unet: dict, vae: dict, text: dict, extra: dict) -> dict:
    return {**layout_unet, **vae, **text, **extra}


@pytest.mark.parametrize("name", ["sd15", "sd21_768v", "sdxl_base", "controlnet_sd15", "vae_sd"])
def test_generators_reproduce_the_shared_layouts(name: str, layouts_dir: Path) -> None:
    if name == "sd15":
        built = _full_sd(K.ldm_unet(), K.ldm_vae(prefix="first_stage_model."),
                         K.hf_clip_text(prefix="cond_stage_model.transformer."), K.ldm_schedule())
    elif name == "sd21_768v":
        built = _full_sd(K.ldm_unet(**K.UNET_CONFIGS["sd2"]), K.ldm_vae(prefix="first_stage_model."),
                         K.open_clip_text(prefix="cond_stage_model.model."), K.ldm_schedule())
    elif name == "sdxl_base":
        built = _full_sd(K.ldm_unet(dtype="F16", **K.UNET_CONFIGS["sdxl"]),
                         K.ldm_vae(dtype="F16", prefix="first_stage_model."),
                         K.hf_clip_text(dtype="F16", prefix="conditioner.embedders.0.transformer."),
                         K.open_clip_text(width=1280, layers=32, mlp=5120, projection=1280, dtype="F16",
                                          prefix="conditioner.embedders.1.model."))
        built["denoiser.sigmas"] = TensorDecl((1000,), "F16")
    elif name == "controlnet_sd15":
        built = K.ldm_controlnet()
    else:
        built = K.ldm_vae()
    assert built == load_shared_layout(name, layouts_dir)


def test_kohya_lora_generator_reproduces_the_shared_layout(layouts_dir: Path) -> None:
    from assetkit.factory.diffusers_keys import kohya_unet_modules_diffusers

    modules = kohya_unet_modules_diffusers("sd1")
    modules.update(K.kohya_text_encoder_modules("lora_te", 768, 3072, 12))
    assert K.lora_kohya(modules) == load_shared_layout("lora_sd15_kohya", layouts_dir)


def test_generators_agree_with_diffusers_and_transformers() -> None:
    from assetkit.factory import diffusers_keys as D

    # transformers names are identical (CLIPTextModelWithProjection keeps ``text_model.``)
    assert K.hf_clip_text(width=1280, layers=32, mlp=5120, projection=1280, position_ids=False) == \
        D.transformers_clip_text(width=1280, layers=32, mlp=5120, heads=20, projection=1280)
    assert K.t5_encoder(embed_tokens=True) == D.transformers_t5_encoder()  # the tied alias is in state_dict()
    # other naming, same architecture: same parameter count
    for family in ("sd1", "sd2", "sdxl", "sdxl-refiner"):
        assert parameters(K.ldm_unet(**K.UNET_CONFIGS[family])) == parameters(D.diffusers_unet(family)), family
    assert parameters(K.flux(guidance=True)) == parameters(D.diffusers_flux_transformer(guidance=True))
    assert parameters(K.flux(guidance=False)) == parameters(D.diffusers_flux_transformer(guidance=False))
    for model in ("sd3-medium", "sd3.5-large"):
        assert parameters(K.mmdit(**K.MMDIT_CONFIGS[model])) == parameters(D.diffusers_sd3_transformer(model))
    assert parameters(K.ldm_vae(z_channels=16, quant_conv=False)) == \
        parameters(D.diffusers_vae(latent_channels=16, quant_conv=False))
    assert parameters(K.ldm_controlnet()) == parameters(D.diffusers_controlnet("sd1"))
    assert parameters(K.t2i_adapter_original()) == parameters(D.diffusers_t2i_adapter())


# --- tiny files in every container -------------------------------------------------------------------


@pytest.mark.parametrize(("fixture_id", "container"), FILE_CASES, ids=[f"{f}-{c}" for f, c in FILE_CASES])
def test_fixture_rereads_with_the_real_libraries(fixture_id: str, container: str, tmp_path: Path) -> None:
    spec = FIXTURES[fixture_id]
    path = make_fixture(fixture_id, tmp_path, container)
    want = tiny_layout(spec.layout())
    assert path.stat().st_size < 25_000_000
    if container == "safetensors":
        found, metadata = _safetensors_index(path)
        assert found == want
        assert {k: v for k, v in metadata.items() if k != "format"} == dict(spec.metadata)
        return
    assert zipfile.is_zipfile(path) == (container == "torch-zip")
    if fixture_id == "sd15_ckpt_lightning":
        assert LIGHTNING_CALLBACK in _pickle_globals(path)
        assert "pytorch_lightning" not in sys.modules
        return
    found, payload = _torch_index(path)
    assert found == want
    if fixture_id == "sd2_512_ckpt_step875000":
        assert payload["global_step"] == 875000
    if fixture_id == "ti_sd15_a1111_pt":
        assert payload["string_to_token"] == {"*": 265} and payload["name"] == "tiny-embedding"


def test_tiny_files_keep_the_decisive_dimensions(tmp_path: Path) -> None:
    found, _ = _safetensors_index(make_fixture("sdxl_inpaint", tmp_path))
    unet = "model.diffusion_model."
    assert found[f"{unet}input_blocks.0.0.weight"].shape == (320, 9, 3, 3)
    assert found[f"{unet}label_emb.0.0.weight"].shape[1] == 2816
    assert found[f"{unet}time_embed.0.weight"].shape[1] == 320
    assert found[f"{unet}input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"].shape[1] == 2048
    assert found["conditioner.embedders.1.model.text_projection"].shape[1] == 1280
    assert found["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"].shape == (768,)
    assert found["first_stage_model.quant_conv.weight"].shape == (8, 8, 1, 1)
    full = FIXTURES["sdxl_inpaint"].layout()
    for name, decl in found.items():  # every tensor keeps its rank and dtype; big ones shrink
        assert len(decl.shape) == len(full[name].shape) and decl.dtype == full[name].dtype
        assert decl.shape == full[name].shape or full[name].numel > KEEP_REAL_NUMEL
    # fused projections keep their ratios (converters split them)
    flux = FIXTURES["flux_dev"].layout()
    qkv, proj = (tiny_shape(n, flux[n]) for n in ("double_blocks.0.img_attn.qkv.weight",
                                                  "double_blocks.0.img_attn.proj.weight"))
    assert qkv[0] == 3 * proj[0] and qkv[1] == proj[1]
    assert tiny_shape("single_blocks.0.linear1.weight", flux["single_blocks.0.linear1.weight"])[0] == 3 * 48 + 192


def test_same_call_writes_the_same_tensors(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    first = load_file(str(make_fixture("lora_sd15_kohya", tmp_path / "a")))
    second = load_file(str(make_fixture("lora_sd15_kohya", tmp_path / "b")))
    other = load_file(str(make_fixture("lora_sd15_kohya", tmp_path / "c", seed=1)))
    name = "lora_unet_mid_block_attentions_0_proj_out.lora_down.weight"
    assert all((first[k] == second[k]).all() for k in first)
    assert not (first[name] == other[name]).all()


def test_lora_alpha_and_schedule_values_are_real(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    loha = load_file(str(make_fixture("lora_sd15_loha", tmp_path)))
    assert float(next(v for k, v in loha.items() if k.endswith(".alpha"))) == 4.0
    sd = load_file(str(make_fixture("sd15", tmp_path)))
    assert sd["alphas_cumprod"][0] == pytest.approx(1 - 0.00085, rel=1e-5)
    assert sd["alphas_cumprod"][-1] == pytest.approx(0.0047, rel=0.01)
    assert sd["cond_stage_model.transformer.text_model.embeddings.position_ids"].tolist() == [list(range(77))]


# --- full-size sparse files --------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHARED)
def test_sparse_full_size_file_has_the_exact_layout(name: str, layouts_dir: Path, tmp_path: Path) -> None:
    layout = load_shared_layout(name, layouts_dir)
    path = write_sparse_safetensors(layout, tmp_path / f"{name}.safetensors", {"source": name})
    found, metadata = _safetensors_index(path)
    assert found == layout
    assert metadata == {"source": name}
    document = json.loads((layouts_dir / f"{name}.json").read_text())
    head, data_size = safetensors_header(layout)
    assert data_size == document["stats"]["num_bytes"]
    stat = path.stat()
    assert stat.st_size >= data_size
    assert stat.st_blocks * 512 < 2_000_000, "the data section must be a hole"


def test_full_fixture_of_a_spec_matches_its_shared_layout(layouts_dir: Path, tmp_path: Path) -> None:
    for spec in FIXTURES.values():
        if spec.shared_layout:
            path = make_fixture(spec.id, tmp_path, full=True, layouts_dir=layouts_dir)
            found, metadata = _safetensors_index(path)
            assert found == load_shared_layout(spec.shared_layout, layouts_dir), spec.id
            assert metadata == dict(spec.metadata), spec.id
    text = strip_prefix(load_shared_layout("sd21_768v", layouts_dir), "cond_stage_model.model.")
    assert FIXTURES["te_openclip_h"].layout(layouts_dir) == text
    with pytest.raises(ValueError, match="sparse safetensors only"):
        make_fixture("sd15", tmp_path, "torch-zip", full=True)


# --- diffusers folders -----------------------------------------------------------------------------------


def test_sd1_folder_loads_back_with_diffusers(tmp_path: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from assetkit.factory.diffusers_models import tiny_sd1_pipeline

    folder = make_fixture("diffusers_sd15", tmp_path, "diffusers")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    assert loaded.unet.config.cross_attention_dim == 768
    assert loaded.text_encoder.config.hidden_size == 768
    reference = tiny_sd1_pipeline()
    for name, tensor in reference.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], tensor), name
    assert loaded.tokenizer("the cat").input_ids[0] == loaded.text_encoder.config.bos_token_id


def test_folder_options_and_sdxl_load_back(tmp_path: Path) -> None:
    from diffusers import (
        AutoencoderKL,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    from assetkit.factory.diffusers_models import save_tiny_component, save_tiny_sd1_pipeline

    fp16 = save_tiny_sd1_pipeline(tmp_path / "fp16", variant="fp16")
    assert (fp16 / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    stored, _ = _safetensors_index(fp16 / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    assert {decl.dtype for decl in stored.values()} == {"F16"}
    StableDiffusionPipeline.from_pretrained(str(fp16), variant="fp16", local_files_only=True)

    sharded = save_tiny_component("unet", tmp_path / "sharded", max_shard_size="1MB")
    assert (sharded / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("diffusion_pytorch_model-*.safetensors"))) > 1
    UNet2DConditionModel.from_pretrained(str(sharded), local_files_only=True)

    pickled = save_tiny_component("vae", tmp_path / "bin", safe_serialization=False)
    assert (pickled / "diffusion_pytorch_model.bin").is_file()
    AutoencoderKL.from_pretrained(str(pickled), local_files_only=True)

    xl = make_fixture("diffusers_sdxl", tmp_path, "diffusers")
    loaded = StableDiffusionXLPipeline.from_pretrained(str(xl), local_files_only=True)
    assert loaded.text_encoder_2 is not None and loaded.tokenizer_2 is not None
    with pytest.raises(FileExistsError):
        save_tiny_sd1_pipeline(fp16)


# --- assetkit demo -----------------------------------------------------------------------------------------


def test_demo_writes_its_files_and_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    from assetkit.cli import main

    runner = CliRunner()
    target = tmp_path / "demo"
    result = runner.invoke(main, ["demo", str(target), "--json", "--files-only"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is True and len(document["files"]) == 5
    for record in document["files"]:
        assert Path(record["path"]).exists() and record["bytes"] > 0
    assert (target / "sd15-tiny.safetensors").is_file() and (target / "sd15-tiny.ckpt").is_file()
    assert (target / "sd15-diffusers-tiny" / "model_index.json").is_file()
    assert any("assetkit inspect" in line for line in document["next"])

    again = runner.invoke(main, ["demo", str(target)])
    assert again.exit_code == 2
    assert again.stderr.strip().count("\n") == 0 and "not empty" in again.stderr

    human = runner.invoke(main, ["demo", str(target), "--overwrite", "--files-only"])
    assert human.exit_code == 0 and "Next, try:" in human.stdout
