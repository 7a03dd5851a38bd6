"""The probe on what users actually download, beyond the clean reference layouts: EMA copies, old
transformers names, ComfyUI/A1111 re-saves, fp8 and scaled-fp8 Flux, unCLIP, Playground, LoRAs in
every trainer's naming (kohya with diffusers module names, peft, XLabs, DoRA, SD3/Flux), Control-LoRA,
XLabs Flux ControlNet, IP-Adapter Plus/FaceID, and files that have no assetkit kind (CLIP vision).

Names follow the reference implementations and loaders (ldm/sgm, ComfyUI, diffusers single-file and
LoRA conversion, kohya sd-scripts, x-flux); tensors are in-memory indexes with real full-size shapes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from assetkit.factory import keys as K
from assetkit.factory.layouts import Layout, TensorDecl, load_shared_layout
from assetkit.formats.base import Asset, TensorInfo
from assetkit.probe import ProbeResult, probe

DUMMY = Path("/nonexistent/download.safetensors")


def asset_of(layout: dict, metadata: dict | None = None, fmt: str = "safetensors") -> Asset:
    """An Asset over ``name -> TensorDecl | shape`` (plain shapes are F16)."""
    tensors = {}
    for name, decl in layout.items():
        dtype, shape = (decl.dtype, decl.shape) if isinstance(decl, TensorDecl) else ("F16", tuple(decl))
        tensors[name] = TensorInfo(name, dtype, tuple(shape), DUMMY, None)
    return Asset(path=DUMMY, format=fmt, tensors=tensors, metadata=dict(metadata or {}), configs={})


def run(layout: dict, **kwargs) -> ProbeResult:
    return probe(asset_of(layout, **kwargs))


def verdict(result: ProbeResult) -> tuple:
    return result.kind, result.family, result.variant, result.layout


def has(result: ProbeResult, text: str) -> bool:
    return any(text in line for line in result.evidence)


def lora(modules: dict[str, tuple[int, int]], rank: int, down: str = ".lora_down.weight",
         up: str = ".lora_up.weight", alpha: bool = True) -> dict:
    """LoRA factors for ``module -> (out, in)``."""
    out: dict = {}
    for name, (out_f, in_f) in modules.items():
        out[f"{name}{down}"] = (rank, in_f)
        out[f"{name}{up}"] = (out_f, rank)
        if alpha:
            out[f"{name}.alpha"] = ()
    return out


@pytest.fixture(scope="module")
def sd15(layouts_dir: Path) -> Layout:
    return load_shared_layout("sd15", layouts_dir, include_optional=True)


@pytest.fixture(scope="module")
def sdxl(layouts_dir: Path) -> Layout:
    return load_shared_layout("sdxl_base", layouts_dir)


@pytest.fixture(scope="module")
def sd21(layouts_dir: Path) -> Layout:
    return load_shared_layout("sd21_768v", layouts_dir)


# ---- SD1.x / SD2.x full checkpoints as released and re-saved --------------------------------------
def test_sd15_pruned_with_ema_copy(sd15: Layout) -> None:
    """v1-5-pruned.ckpt: the EMA weights under model_ema.* with the dots removed from their names."""
    keys = dict(sd15)
    for name, decl in sd15.items():
        if name.startswith("model.diffusion_model."):
            keys["model_ema." + name[len("model."):].replace(".", "")] = decl
    assert "model_ema.decay" in keys and "model_ema.num_updates" in keys
    result = run(keys, fmt="torch-zip", metadata={"global_step": 840000})
    assert verdict(result) == ("pipeline", "sd1", None, "original")
    assert set(result.components) == {"unet", "vae", "text_encoder"}
    ema = sum(1 for k in keys if k.startswith("model_ema."))
    assert ema == result.components["unet"].tensors + 2
    assert result.details["other_tensors"]["ema weights"] == ema
    assert has(result, f"model_ema.* ({ema} tensors): an EMA copy")


def test_sd14_text_encoder_without_text_model(sd15: Layout) -> None:
    """sd-v1-4.ckpt was saved with transformers < 4.11: cond_stage_model.transformer.embeddings..."""
    keys = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
            for k, v in sd15.items()}
    result = run(keys)
    assert verdict(result) == ("pipeline", "sd1", None, "original")
    assert result.components["text_encoder"].details["text_encoder"] == "clip-l"
    assert has(result, "cond_stage_model.transformer.embeddings.token_embedding.weight")


def test_alphas_cumprod_only_and_mixed_precision(sd15: Layout) -> None:
    """Pruned merges keep one schedule buffer; fp16 UNet next to an fp32 VAE and text encoder."""
    keys = {k: (TensorDecl(v.shape, "F16") if k.startswith("model.diffusion_model.") else v)
            for k, v in sd15.items() if k not in K.LDM_SCHEDULE_BUFFERS or k == "alphas_cumprod"}
    result = run(keys)
    assert verdict(result) == ("pipeline", "sd1", None, "original")
    assert result.details["other_tensors"]["noise-schedule buffers"] == 1
    assert result.components["unet"].dtypes == {"F16": 686}
    assert set(result.components["vae"].dtypes) == {"F32"}


def test_sd2_open_clip_original_names(sd21: Layout) -> None:
    result = run(sd21)
    assert verdict(result) == ("pipeline", "sd2", None, "original")
    encoder = result.components["text_encoder"]
    assert (encoder.source, encoder.layout, encoder.details["text_encoder"]) == (
        "cond_stage_model.", "open_clip", "openclip-h")


def test_sd21_unclip(sd21: Layout) -> None:
    """sd21-unclip-h.ckpt: an image-embedding adm input (2048), the OpenCLIP-H vision tower as
    embedder.model.visual.* and the noise augmentor's buffers. Family sd2, no variant id for it."""
    keys = {k: v for k, v in sd21.items() if not k.startswith("model.diffusion_model.")}
    keys |= K.ldm_unet(dtype="F16", adm_in_channels=2048, **K.UNET_CONFIGS["sd2"])
    for name in ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "data_mean", "data_std"):
        keys[f"noise_augmentor.{name}"] = TensorDecl((1000,) if "data" not in name else (1, 1024), "F32")
    keys["embedder.model.visual.conv1.weight"] = TensorDecl((1280, 3, 14, 14), "F16")
    keys["embedder.model.visual.transformer.resblocks.0.attn.in_proj_weight"] = TensorDecl((3840, 1280), "F16")
    result = run(keys)
    assert verdict(result) == ("pipeline", "sd2", None, "original")
    assert result.details["model"] == "sd2.1-unclip-h"
    assert result.components["image_encoder"].kind == "unknown"
    assert result.components["image_encoder"].tensors == 2
    assert result.details["other_tensors"]["image-embedding noise augmentation buffers (unCLIP)"] == 5
    assert has(result, "adm input 2048")
    assert not [f for f in result.findings if f.severity != "info"]


def test_adm_input_of_no_family_stays_unknown_family() -> None:
    """A pooled input nothing in the catalogue has: no family guessed."""
    result = run(K.ldm_unet(adm_in_channels=999, context_dim=1024, use_linear=True, prefix=""))
    assert (result.kind, result.family) == ("unet", None)


# ---- SDXL family ---------------------------------------------------------------------------------
def test_sdxl_comfyui_save_and_missing_text_encoders(sdxl: Layout) -> None:
    result = run(sdxl)
    assert verdict(result) == ("pipeline", "sdxl", None, "original")
    assert {c.source for c in result.components.values() if c.kind == "text_encoder"} == {
        "conditioner.embedders.0.", "conditioner.embedders.1."}
    no_te = run({k: v for k, v in sdxl.items() if not k.startswith("conditioner.")})
    assert verdict(no_te) == ("pipeline", "sdxl", None, "original")
    assert set(no_te.components) == {"unet", "vae"}
    assert no_te.details["text_encoders"] == []
    assert has(no_te, "no text encoders in the file")


def test_playground_v25_edm(sdxl: Layout) -> None:
    keys = dict(sdxl) | {"edm_mean": TensorDecl((1, 4, 1, 1), "F32"), "edm_std": TensorDecl((1, 4, 1, 1), "F32")}
    result = run(keys)
    assert verdict(result) == ("pipeline", "sdxl", None, "original")
    assert result.details["model"] == "playground-v2.5"
    assert result.prediction_type is None
    assert has(result, "EDM formulation")
    assert "unrecognised" not in result.details.get("other_tensors", {})


def test_pony_like_sdxl_finetune_with_v_pred(sdxl: Layout) -> None:
    """Finetunes (Pony, Illustrious/NoobAI v-pred) keep SDXL tensors; v_pred/ztsnr markers say the rest."""
    keys = dict(sdxl) | {"v_pred": TensorDecl((0,), "F32"), "ztsnr": TensorDecl((0,), "F32")}
    result = run(keys, metadata={"modelspec.architecture": "stable-diffusion-xl-v1-base"})
    assert (result.kind, result.family, result.prediction_type) == ("pipeline", "sdxl", "v_prediction")
    assert result.details["ztsnr"] is True


# ---- SD3.5 / Flux -------------------------------------------------------------------------------
def test_sd35_medium_mmditx_with_all_encoders() -> None:
    result = run(K.sd3_checkpoint("sd3.5-medium", clips=True, t5=True))
    assert verdict(result) == ("pipeline", "sd3", None, "original")
    assert result.details["model"] == "sd3.5-medium"
    assert result.details["dual_attention_blocks"] is True
    assert sorted(result.details["text_encoders"]) == ["clip-l", "openclip-bigg", "t5-xxl"]


def flux_comfy(dtype: str, scaled: bool) -> Layout:
    """A ComfyUI-saved Flux checkpoint: model.diffusion_model.*, vae.*, text_encoders.{clip_l,t5xxl}."""
    keys = K.flux(dtype=dtype, prefix="model.diffusion_model.")
    if scaled:
        for name, decl in list(keys.items()):
            if name.endswith(".weight") and len(decl.shape) == 2:
                keys[name[: -len(".weight")] + ".scale_weight"] = TensorDecl((), "F32")
        keys["model.diffusion_model.scaled_fp8"] = TensorDecl((0,), dtype)
    keys |= K.ldm_vae(z_channels=16, quant_conv=False, dtype="BF16", prefix="vae.")
    keys |= K.hf_clip_text(dtype="F16", prefix="text_encoders.clip_l.transformer.")
    keys |= K.t5_encoder(dtype=dtype, prefix="text_encoders.t5xxl.transformer.")
    return keys


@pytest.mark.parametrize(("dtype", "scaled"), [("BF16", False), ("F8_E4M3", False), ("F8_E4M3", True)])
def test_flux_comfyui_checkpoint(dtype: str, scaled: bool) -> None:
    result = run(flux_comfy(dtype, scaled))
    assert verdict(result) == ("pipeline", "flux", None, "original")
    assert result.details["model"] == "flux.1-dev"
    assert set(result.components) == {"transformer", "vae", "text_encoder", "text_encoder_2"}
    assert result.components["vae"].source == "vae."
    assert result.components["transformer"].details["in_channels"] == 64
    quantization = result.details.get("quantization")
    if dtype == "BF16":
        assert quantization is None
    else:
        assert "fp8" in quantization
        assert ("scaled fp8" in quantization) is scaled
        assert has(result, "storage: ")


def test_flux_bnb_nf4_is_flux_and_says_packed() -> None:
    keys = {k: TensorDecl((v.numel // 2, 1), "U8") if k.endswith(".weight") and len(v.shape) == 2 else v
            for k, v in K.flux(dtype="BF16").items()}
    for name in [k for k in keys if k.endswith(".weight") and keys[k].dtype == "U8"]:
        keys[f"{name}.absmax"] = TensorDecl((64,), "F32")
        keys[f"{name}.quant_state.bitsandbytes__nf4"] = TensorDecl((100,), "U8")
    result = run(keys)
    assert (result.kind, result.family) == ("transformer", "flux")
    assert "bitsandbytes nf4" in result.details["quantization"]


# ---- LoRAs ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sdxl_attention() -> dict[str, tuple[int, int]]:
    from assetkit.factory.diffusers_keys import unet_attention_projections

    return unet_attention_projections("sdxl")


@pytest.mark.parametrize(("style", "layout"), [("kohya-diffusers-names", "kohya"), ("peft", "peft"),
                                               ("diffusers-old", "diffusers"), ("dora", "lycoris")])
def test_sdxl_lcm_lightning_loras(sdxl_attention: dict, style: str, layout: str) -> None:
    """LCM-LoRA / SDXL-Lightning LoRAs: kohya keys with diffusers module names
    (lora_unet_down_blocks_1_attentions_0_...), peft unet.*.lora_A, old diffusers .lora.down, DoRA."""
    if style in ("kohya-diffusers-names", "dora"):
        keys = lora({"lora_unet_" + k.replace(".", "_"): v for k, v in sdxl_attention.items()}, 64)
        if style == "dora":
            for name in [k for k in keys if k.endswith(".lora_down.weight")]:
                keys[name.replace(".lora_down.weight", ".dora_scale")] = (1, keys[name][1])
    elif style == "peft":
        keys = lora({"unet." + k: v for k, v in sdxl_attention.items()}, 64, ".lora_A.weight", ".lora_B.weight",
                    alpha=False)
    else:
        keys = lora({"unet." + k: v for k, v in sdxl_attention.items()}, 64, ".lora.down.weight",
                    ".lora.up.weight", alpha=False)
    result = run(keys)
    assert verdict(result) == ("lora", "sdxl", None, layout)
    assert result.details["rank"] == 64
    assert result.details["targets"] == ["unet"]
    assert result.details.get("dora", False) is (style == "dora")
    assert has(result, "cross-attention LoRA input width 2048")


def te_modules(prefix: str, width: int, layers: int) -> dict[str, tuple[int, int]]:
    return {f"{prefix}text_model_encoder_layers_{i}_self_attn_{p}": (width, width)
            for i in range(layers) for p in ("q_proj", "k_proj")}


def test_text_encoder_only_loras() -> None:
    sdxl_te = run(lora(te_modules("lora_te1_", 768, 12) | te_modules("lora_te2_", 1280, 32), 8))
    assert verdict(sdxl_te) == ("lora", "sdxl", None, "kohya")
    assert sdxl_te.details["targets"] == ["text_encoder", "text_encoder_2"]
    sd1_te = run(lora(te_modules("lora_te_", 768, 12), 8))
    assert verdict(sd1_te) == ("lora", "sd1", None, "kohya")
    sd2_te = run(lora(te_modules("lora_te_", 1024, 23), 8))
    assert verdict(sd2_te) == ("lora", "sd2", None, "kohya")


FLUX_DOUBLE = {f"double_blocks.{i}.img_attn.qkv": (9216, 3072) for i in range(19)}
FLUX_SINGLE = {f"single_blocks.{i}.linear1": (21504, 3072) for i in range(38)}


def test_flux_kohya_lora_with_clip_l() -> None:
    modules = {"lora_unet_" + k.replace(".", "_"): v for k, v in (FLUX_DOUBLE | FLUX_SINGLE).items()}
    result = run(lora(modules | te_modules("lora_te1_", 768, 12), 16))
    assert verdict(result) == ("lora", "flux", None, "kohya")
    assert result.details["targets"] == ["text_encoder", "transformer"]


def test_flux_ai_toolkit_and_diffusers_loras() -> None:
    toolkit = run(lora({"diffusion_model." + k: v for k, v in FLUX_DOUBLE.items()}, 16, ".lora_A.weight",
                       ".lora_B.weight", alpha=False))
    assert verdict(toolkit) == ("lora", "flux", None, "peft")
    peft = {f"transformer.single_transformer_blocks.{i}.attn.{p}": (3072, 3072)
            for i in range(38) for p in ("to_q", "to_k", "to_v")}
    result = run(lora(peft, 16, ".lora_A.weight", ".lora_B.weight", alpha=False))
    assert verdict(result) == ("lora", "flux", None, "peft")
    assert result.details["targets"] == ["transformer"]


def test_flux_xlabs_lora() -> None:
    """x-flux LoRA: double_blocks.N.processor.{qkv,proj}_lora{1,2}.{down,up}.weight."""
    keys: dict = {}
    for i in range(19):
        for name, out_f in (("qkv_lora1", 9216), ("qkv_lora2", 9216), ("proj_lora1", 3072), ("proj_lora2", 3072)):
            keys[f"double_blocks.{i}.processor.{name}.down.weight"] = (16, 3072)
            keys[f"double_blocks.{i}.processor.{name}.up.weight"] = (out_f, 16)
    result = run(keys, metadata={"format": "pt"})
    assert verdict(result) == ("lora", "flux", None, "xlabs")
    assert result.details["rank"] == 16
    assert result.details["targets"] == ["transformer"]


def test_sd3_loras() -> None:
    joint = {f"lora_unet_joint_blocks_{i}_{side}_attn_qkv": (4608, 1536)
             for i in range(24) for side in ("x_block", "context_block")}
    t5 = {f"lora_te3_encoder_block_{i}_layer_0_SelfAttention_q": (4096, 4096) for i in range(24)}
    kohya = run(lora(joint | te_modules("lora_te1_", 768, 12) | te_modules("lora_te2_", 1280, 32) | t5, 8))
    assert verdict(kohya) == ("lora", "sd3", None, "kohya")
    assert kohya.details["targets"] == ["text_encoder", "text_encoder_2", "text_encoder_3", "transformer"]
    large = {f"transformer.transformer_blocks.{i}.attn.{p}": (2432, 2432)
             for i in range(38) for p in ("to_q", "to_k", "add_q_proj")}
    assert verdict(run(lora(large, 16, ".lora_A.weight", ".lora_B.weight", alpha=False))) == (
        "lora", "sd3", None, "peft")


# ---- ControlNets and adapters ------------------------------------------------------------------
def control_lora(rank: int = 128) -> Layout:
    """Stability control-lora-*-rank128.safetensors: cldm names without control_model., the UNet-copy
    Linears/convs as <module>.up/.down factors, hint block and zero convs in full, lora_controlnet."""
    full = K.ldm_controlnet(prefix="", dtype="F16", **K.UNET_CONFIGS["sdxl"])
    keys: Layout = {}
    for name, decl in full.items():
        module = name[: -len(".weight")]
        factored = name.endswith(".weight") and (
            (".transformer_blocks." in name and len(decl.shape) == 2 and ".norm" not in name)
            or name.endswith(("in_layers.2.weight", "out_layers.3.weight")))
        if factored:
            keys[f"{module}.up"] = TensorDecl((decl.shape[0], rank, *(1,) * (len(decl.shape) - 2)), "F16")
            keys[f"{module}.down"] = TensorDecl((rank, *decl.shape[1:]), "F16")
        else:
            keys[name] = decl
    keys["lora_controlnet"] = TensorDecl((0,), "F16")
    return keys


def test_control_lora_sdxl() -> None:
    result = run(control_lora())
    assert verdict(result) == ("controlnet", "sdxl", None, "original")
    assert result.details["control_lora"] is True and result.details["rank"] == 128
    assert result.details["context_dim"] == 2048
    assert has(result, "Stability Control-LoRA")


def test_controlnet_original_with_prefix_sdxl_and_diffusers() -> None:
    from assetkit.factory.diffusers_keys import diffusers_controlnet

    original = run(K.ldm_controlnet(**K.UNET_CONFIGS["sdxl"]))
    assert verdict(original) == ("controlnet", "sdxl", None, "original")
    for family in ("sd1", "sdxl"):
        assert verdict(run(diffusers_controlnet(family))) == ("controlnet", family, None, "diffusers")


def test_xlabs_flux_controlnet_is_not_a_transformer() -> None:
    """x-flux ControlNetFlux: two double blocks, hint encoder, pos_embed_input, controlnet_blocks."""
    keys = K.flux(depth=2, depth_single=0)
    for i in range(2):
        keys[f"controlnet_blocks.{i}.weight"] = TensorDecl((3072, 3072), "BF16")
        keys[f"controlnet_blocks.{i}.bias"] = TensorDecl((3072,), "BF16")
    for i, (out_c, in_c) in enumerate([(16, 3), (16, 16), (16, 16), (16, 16), (16, 16), (16, 16), (16, 16), (16, 16)]):
        keys[f"input_hint_block.{2 * i}.weight"] = TensorDecl((out_c, in_c, 3, 3), "BF16")
    keys["pos_embed_input.weight"] = TensorDecl((3072, 64), "BF16")
    result = run(keys)
    assert verdict(result) == ("controlnet", "flux", None, "original")
    assert result.details["double_blocks"] == 2
    assert all(c.kind != "transformer" for c in result.candidates)


def test_t2i_adapter_xl() -> None:
    from assetkit.factory.diffusers_keys import diffusers_t2i_adapter

    result = run(diffusers_t2i_adapter(xl=True))
    assert verdict(result) == ("t2i_adapter", "sdxl", None, "diffusers")


def sd15_cross_attention() -> list[tuple[int, int, int]]:
    """(processor index, hidden size, context width) of the SD1.5 UNet's attention processors."""
    from assetkit.factory.diffusers_keys import unet_attention_processors

    return [(i, hidden, ctx) for i, (_path, hidden, ctx) in enumerate(unet_attention_processors("sd1"))]


def test_ip_adapter_plus_with_perceiver_layers() -> None:
    keys: dict = {"image_proj.latents": (1, 16, 768), "image_proj.proj_in.weight": (768, 1280),
                  "image_proj.proj_out.weight": (768, 768), "image_proj.norm_out.weight": (768,)}
    for layer in range(4):
        p = f"image_proj.layers.{layer}"
        keys |= {f"{p}.0.norm1.weight": (768,), f"{p}.0.norm2.weight": (768,), f"{p}.0.to_q.weight": (768, 768),
                 f"{p}.0.to_kv.weight": (1536, 768), f"{p}.0.to_out.weight": (768, 768), f"{p}.1.0.weight": (768,),
                 f"{p}.1.1.weight": (3072, 768), f"{p}.1.3.weight": (768, 3072)}
    for index, hidden, ctx in sd15_cross_attention():
        if ctx == 768:
            keys[f"ip_adapter.{index}.to_k_ip.weight"] = (hidden, 768)
            keys[f"ip_adapter.{index}.to_v_ip.weight"] = (hidden, 768)
    result = run(keys)
    assert (result.kind, result.family) == ("ip_adapter", "sd1")
    assert result.details["projection"] == "resampler"
    assert (result.details["tokens"], result.details["image_embed_dim"]) == (16, 1280)


def test_ip_adapter_faceid_with_its_lora() -> None:
    keys: dict = {"image_proj.proj.0.weight": (1024, 512), "image_proj.proj.0.bias": (1024,),
                  "image_proj.proj.2.weight": (3072, 1024), "image_proj.norm.weight": (768,)}
    for index, hidden, ctx in sd15_cross_attention():
        for proj, width in (("to_q", hidden), ("to_k", ctx), ("to_v", ctx), ("to_out", hidden)):
            keys[f"ip_adapter.{index}.{proj}_lora.down.weight"] = (128, width)
            keys[f"ip_adapter.{index}.{proj}_lora.up.weight"] = (hidden, 128)
        if ctx == 768:
            keys[f"ip_adapter.{index}.to_k_ip.weight"] = (hidden, 768)
            keys[f"ip_adapter.{index}.to_v_ip.weight"] = (hidden, 768)
    result = run(keys)
    assert (result.kind, result.family) == ("ip_adapter", "sd1")
    assert result.details["projection"] == "mlp" and result.details["image_embed_dim"] == 512
    assert result.details["lora_rank"] == 128
    assert has(result, "IP-Adapter FaceID")


# ---- textual inversion ----------------------------------------------------------------------------
@pytest.mark.parametrize(("keys", "family", "vectors"), [
    ({"emb_params": TensorDecl((16, 1024), "F32")}, "sd2", 16),
    ({"string_to_param.*": TensorDecl((75, 768), "F32"), "string_to_token.*": TensorDecl((), "I64")}, "sd1", 75),
    ({"clip_l": TensorDecl((8, 768), "F16"), "clip_g": TensorDecl((8, 1280), "F16")}, "sdxl", 8),
])
def test_multi_vector_textual_inversion(keys: dict, family: str, vectors: int) -> None:
    result = run(keys, fmt="torch-zip" if "string_to_param.*" in keys else "safetensors")
    assert (result.kind, result.family, result.details["vectors"]) == ("textual_inversion", family, vectors)


# ---- files with no assetkit kind -----------------------------------------------------------------
def clip_vision_h() -> dict:
    """transformers CLIPVisionModelWithProjection, ViT-H/14 (IP-Adapter's image encoder)."""
    width, mlp = 1280, 5120
    keys: dict = {"vision_model.embeddings.class_embedding": (width,),
                  "vision_model.embeddings.patch_embedding.weight": (width, 3, 14, 14),
                  "vision_model.embeddings.position_embedding.weight": (257, width),
                  "vision_model.pre_layrnorm.weight": (width,), "vision_model.post_layernorm.weight": (width,),
                  "visual_projection.weight": (1024, width)}
    for i in range(32):
        b = f"vision_model.encoder.layers.{i}"
        keys |= {f"{b}.self_attn.{p}.weight": (width, width) for p in ("q_proj", "k_proj", "v_proj", "out_proj")}
        keys |= {f"{b}.mlp.fc1.weight": (mlp, width), f"{b}.mlp.fc2.weight": (width, mlp),
                 f"{b}.layer_norm1.weight": (width,), f"{b}.layer_norm2.weight": (width,)}
    return keys


def test_clip_vision_encoder_is_unknown_with_reason() -> None:
    result = run(clip_vision_h())
    assert (result.kind, result.family) == ("unknown", None)
    assert result.details["hidden_size"] == 1280
    assert has(result, "CLIP vision image encoder") and has(result, "not one of assetkit's kinds")


def test_controlnet_lllite_is_unknown_with_reason() -> None:
    keys = {f"lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.{part}": (64, 64)
            for part in ("conditioning1.0.weight", "down.0.weight", "mid.0.weight", "up.0.weight")}
    result = run(keys)
    assert result.kind == "unknown"
    assert has(result, "ControlNet-LLLite")


def test_unrecognised_still_unknown() -> None:
    result = run({"net.blocks.0.attn.weight": (8, 8), "net.head.weight": (8, 8)})
    assert (result.kind, result.family) == ("unknown", None)
    assert has(result, "no known signature matched")


# ---- cost -----------------------------------------------------------------------------------------
def test_probe_time_on_a_full_sdxl_layout_stays_low(sdxl: Layout) -> None:
    asset = asset_of(sdxl)
    probe(asset)
    start = time.perf_counter()
    for _ in range(5):
        probe(asset)
    per_call = (time.perf_counter() - start) / 5
    assert per_call < 0.25, f"probe took {per_call * 1000:.0f} ms on the SDXL layout"
