"""The probe on in-memory tensor indexes with the real key names of each case the shared layouts
do not cover. Original (ldm/sgm/BFL/MMDiT/kohya/A1111/IP-Adapter/TencentARC) names are built
here from the reference implementations' structure (the ldm UNet builder is checked against the
shared SD1.5 and SDXL layouts first); diffusers and transformers names come from the real
classes, instantiated on the meta device (full size, no memory)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from assetkit.formats.base import Asset, TensorInfo
from assetkit.probe import probe

DUMMY = Path("/nonexistent/weights.safetensors")
Shapes = dict[str, tuple[int, ...]]


# ---- helpers -----------------------------------------------------------------------------------
def asset_of(shapes: Shapes, *, dtype: str = "F16", metadata: dict | None = None, fmt: str = "safetensors",
             configs: dict | None = None) -> Asset:
    tensors = {name: TensorInfo(name, dtype, tuple(shape), DUMMY, None) for name, shape in shapes.items()}
    return Asset(path=DUMMY, format=fmt, tensors=tensors, metadata=dict(metadata or {}), configs=dict(configs or {}))


def prefixed(prefix: str, shapes: Shapes) -> Shapes:
    return {prefix + name: shape for name, shape in shapes.items()}


def layout_shapes(layouts_dir: Path, name: str, prefix: str = "", strip: bool = True) -> Shapes:
    keys = json.loads((layouts_dir / name).read_text())["keys"]
    return {(k[len(prefix):] if strip else k): tuple(v["shape"]) for k, v in keys.items() if k.startswith(prefix)}


def verdict(shapes: Shapes, **kwargs) -> tuple:
    result = probe(asset_of(shapes, **kwargs))
    return result.kind, result.family, result.variant, result.layout


def state_shapes(module) -> Shapes:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def on_meta(factory):
    import torch

    with torch.device("meta"):
        return factory()


# ---- original (ldm / sgm) UNet names -------------------------------------------------------------
def ldm_unet(*, in_channels: int = 4, mc: int = 320, mult: Iterable[int] = (1, 2, 4, 4), nrb: int = 2,
             attn_levels: Iterable[int] = (0, 1, 2), depth: Iterable[int] = (1, 1, 1, 1), mid_depth: int = 1,
             context: int = 768, linear: bool = False, adm: int | None = None,
             num_classes: int | None = None) -> Shapes:
    """openaimodel.UNetModel state_dict names and shapes (CompVis ldm / Stability sgm)."""
    mult, attn_levels, depth = tuple(mult), tuple(attn_levels), tuple(depth)
    keys: Shapes = {}
    emb = 4 * mc

    def lin(name: str, out: int, inp: int, bias: bool = True) -> None:
        keys[f"{name}.weight"] = (out, inp)
        if bias:
            keys[f"{name}.bias"] = (out,)

    def conv(name: str, out: int, inp: int, k: int) -> None:
        keys[f"{name}.weight"] = (out, inp, k, k)
        keys[f"{name}.bias"] = (out,)

    def norm(name: str, c: int) -> None:
        keys[f"{name}.weight"] = (c,)
        keys[f"{name}.bias"] = (c,)

    def res(p: str, cin: int, cout: int) -> None:
        norm(f"{p}.in_layers.0", cin)
        conv(f"{p}.in_layers.2", cout, cin, 3)
        lin(f"{p}.emb_layers.1", cout, emb)
        norm(f"{p}.out_layers.0", cout)
        conv(f"{p}.out_layers.3", cout, cout, 3)
        if cin != cout:
            conv(f"{p}.skip_connection", cout, cin, 1)

    def spatial(p: str, c: int, blocks: int) -> None:
        norm(f"{p}.norm", c)
        for proj in ("proj_in", "proj_out"):
            if linear:
                lin(f"{p}.{proj}", c, c)
            else:
                conv(f"{p}.{proj}", c, c, 1)
        for b in range(blocks):
            q = f"{p}.transformer_blocks.{b}"
            for attn, ctx in (("attn1", c), ("attn2", context)):
                lin(f"{q}.{attn}.to_q", c, c, bias=False)
                lin(f"{q}.{attn}.to_k", c, ctx, bias=False)
                lin(f"{q}.{attn}.to_v", c, ctx, bias=False)
                lin(f"{q}.{attn}.to_out.0", c, c)
            lin(f"{q}.ff.net.0.proj", 8 * c, c)
            lin(f"{q}.ff.net.2", c, 4 * c)
            for n in ("norm1", "norm2", "norm3"):
                norm(f"{q}.{n}", c)

    lin("time_embed.0", emb, mc)
    lin("time_embed.2", emb, emb)
    if adm:
        lin("label_emb.0.0", emb, adm)
        lin("label_emb.0.2", emb, emb)
    if num_classes:
        keys["label_emb.weight"] = (num_classes, emb)
    conv("input_blocks.0.0", mc, in_channels, 3)
    chans, ch, idx = [mc], mc, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            res(f"input_blocks.{idx}.0", ch, m * mc)
            ch = m * mc
            if level in attn_levels:
                spatial(f"input_blocks.{idx}.1", ch, depth[level])
            chans.append(ch)
            idx += 1
        if level != len(mult) - 1:
            conv(f"input_blocks.{idx}.0.op", ch, ch, 3)
            chans.append(ch)
            idx += 1
    res("middle_block.0", ch, ch)
    spatial("middle_block.1", ch, mid_depth)
    res("middle_block.2", ch, ch)
    idx = 0
    for level, m in reversed(list(enumerate(mult))):
        for i in range(nrb + 1):
            res(f"output_blocks.{idx}.0", ch + chans.pop(), m * mc)
            ch = m * mc
            sub = 1
            if level in attn_levels:
                spatial(f"output_blocks.{idx}.1", ch, depth[level])
                sub = 2
            if level and i == nrb:
                conv(f"output_blocks.{idx}.{sub}.conv", ch, ch, 3)
            idx += 1
    norm("out.0", ch)
    conv("out.2", 4, mc, 3)
    return keys


SD1_UNET = dict()
SD2_UNET = dict(context=1024, linear=True)
SDXL_UNET = dict(mult=(1, 2, 4), attn_levels=(1, 2), depth=(0, 2, 10), mid_depth=10, context=2048, linear=True,
                 adm=2816)
REFINER_UNET = dict(mc=384, attn_levels=(1, 2), depth=(4, 4, 4, 4), mid_depth=4, context=1280, linear=True, adm=2560)
UPSCALER_UNET = dict(in_channels=7, mc=256, mult=(1, 2, 2, 4), attn_levels=(1, 2, 3), context=1024, linear=True,
                     num_classes=1000)


@pytest.mark.parametrize(("layout", "config"), [("sd15.json", SD1_UNET), ("sd21_768v.json", SD2_UNET),
                                                ("sdxl_base.json", SDXL_UNET)])
def test_ldm_unet_builder_matches_the_real_layouts(layouts_dir: Path, layout: str, config: dict) -> None:
    assert ldm_unet(**config) == layout_shapes(layouts_dir, layout, "model.diffusion_model.")


def full_checkpoint(layouts_dir: Path, base: str, unet: Shapes) -> Shapes:
    """A released single file (``base`` layout) with its UNet replaced."""
    keys = {k: v for k, v in layout_shapes(layouts_dir, base).items() if not k.startswith("model.diffusion_model.")}
    keys.update(prefixed("model.diffusion_model.", unet))
    return keys


# ---- full checkpoints ------------------------------------------------------------------------
@pytest.mark.parametrize(("in_channels", "variant"), [(9, "inpaint"), (8, "instruct-pix2pix")])
def test_sd1_variants(layouts_dir: Path, in_channels: int, variant: str) -> None:
    keys = full_checkpoint(layouts_dir, "sd15.json", ldm_unet(in_channels=in_channels))
    result = probe(asset_of(keys))
    assert (result.kind, result.family, result.variant, result.layout) == ("pipeline", "sd1", variant, "original")
    assert any(f"{in_channels} input channels = {variant}" in line for line in result.evidence)
    assert result.details["in_channels"] == in_channels


def test_sd2_depth(layouts_dir: Path) -> None:
    keys = full_checkpoint(layouts_dir, "sd21_768v.json", ldm_unet(in_channels=5, **SD2_UNET))
    keys["depth_model.model.pretrained.model.patch_embed.backbone.stem.conv.weight"] = (64, 3, 7, 7)
    keys["depth_model.model.scratch.output_conv.4.weight"] = (1, 32, 1, 1)
    result = probe(asset_of(keys))
    assert (result.kind, result.family, result.variant) == ("pipeline", "sd2", "depth")
    assert result.components["depth_estimator"].tensors == 2
    assert result.prediction_type is None


def test_sd2_x4_upscaler(layouts_dir: Path) -> None:
    keys = full_checkpoint(layouts_dir, "sd21_768v.json", ldm_unet(**UPSCALER_UNET))
    for name in ("betas", "alphas_cumprod", "sqrt_alphas_cumprod"):
        keys[f"low_scale_model.{name}"] = (350,)
    result = probe(asset_of(keys))
    assert (result.kind, result.family, result.variant) == ("pipeline", "sd2", "upscale")
    assert result.details["class_embeddings"] == 1000
    assert result.details["other_tensors"]["low-resolution noise augmentation buffers (x4 upscaler)"] == 3


def refiner_checkpoint(layouts_dir: Path) -> Shapes:
    sdxl = layout_shapes(layouts_dir, "sdxl_base.json", strip=False)
    keys = prefixed("model.diffusion_model.", ldm_unet(**REFINER_UNET))
    keys.update({k: v for k, v in sdxl.items() if k.startswith("first_stage_model.")})
    # The refiner's only text encoder is OpenCLIP bigG, as conditioner.embedders.0.
    keys.update({k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v
                 for k, v in sdxl.items() if k.startswith("conditioner.embedders.1.")})
    return keys


def test_sdxl_refiner(layouts_dir: Path) -> None:
    result = probe(asset_of(refiner_checkpoint(layouts_dir)))
    assert (result.kind, result.family, result.variant) == ("pipeline", "sdxl-refiner", None)
    assert set(result.components) == {"unet", "vae", "text_encoder_2"}
    assert result.components["text_encoder_2"].details["text_encoder"] == "openclip-bigg"
    assert result.details["adm_in_channels"] == 2560
    assert not result.findings


def test_sdxl_inpaint(layouts_dir: Path) -> None:
    keys = layout_shapes(layouts_dir, "sdxl_base.json")
    keys["model.diffusion_model.input_blocks.0.0.weight"] = (320, 9, 3, 3)
    assert verdict(keys) == ("pipeline", "sdxl", "inpaint", "original")


def test_v_pred_key_marks_v_prediction(layouts_dir: Path) -> None:
    keys = layout_shapes(layouts_dir, "sdxl_base.json")
    keys["v_pred"] = ()
    result = probe(asset_of(keys))
    assert result.prediction_type == "v_prediction"


@pytest.mark.parametrize(("step", "prediction"), [(110000, "v_prediction"), (875000, "epsilon"), (220000, "epsilon"), (123, None)])
def test_sd2_release_global_step(layouts_dir: Path, step: int, prediction: str | None) -> None:
    keys = layout_shapes(layouts_dir, "sd21_768v.json")
    result = probe(asset_of(keys, fmt="torch-zip", metadata={"global_step": step, "epoch": 3}))
    assert (result.family, result.prediction_type) == ("sd2", prediction)


def test_unet_alone_with_prefix_is_a_unet(layouts_dir: Path) -> None:
    keys = prefixed("model.diffusion_model.", ldm_unet(**SD2_UNET))
    assert verdict(keys) == ("unet", "sd2", None, "original")


@pytest.mark.parametrize(("config", "family"), [(SD1_UNET, "sd1"), (SD2_UNET, "sd2"), (SDXL_UNET, "sdxl"),
                                                (REFINER_UNET, "sdxl-refiner")])
def test_original_unet_alone(config: dict, family: str) -> None:
    assert verdict(ldm_unet(**config)) == ("unet", family, None, "original")


# ---- SD3 (MMDiT) and FLUX.1 in original names --------------------------------------------------
def mmdit(*, depth: int = 24, qk_norm: bool = False, attn2_blocks: int = 0, pos: int = 192) -> Shapes:
    """sd3_impls MMDiT(X) names: joint_blocks.N.{context_block,x_block}.*"""
    h = 64 * depth
    keys: Shapes = {"pos_embed": (1, pos * pos, h), "x_embedder.proj.weight": (h, 16, 2, 2),
                    "x_embedder.proj.bias": (h,), "t_embedder.mlp.0.weight": (h, 256), "t_embedder.mlp.0.bias": (h,),
                    "t_embedder.mlp.2.weight": (h, h), "t_embedder.mlp.2.bias": (h,),
                    "y_embedder.mlp.0.weight": (h, 2048), "y_embedder.mlp.0.bias": (h,),
                    "y_embedder.mlp.2.weight": (h, h), "y_embedder.mlp.2.bias": (h,),
                    "context_embedder.weight": (h, 4096), "context_embedder.bias": (h,),
                    "final_layer.linear.weight": (64, h), "final_layer.linear.bias": (64,),
                    "final_layer.adaLN_modulation.1.weight": (2 * h, h), "final_layer.adaLN_modulation.1.bias": (2 * h,)}
    for i in range(depth):
        for side in ("context_block", "x_block"):
            b = f"joint_blocks.{i}.{side}"
            pre_only = side == "context_block" and i == depth - 1
            dual = side == "x_block" and i < attn2_blocks
            mod = 2 if pre_only else 9 if dual else 6
            keys.update({f"{b}.adaLN_modulation.1.weight": (mod * h, h), f"{b}.adaLN_modulation.1.bias": (mod * h,),
                         f"{b}.attn.qkv.weight": (3 * h, h), f"{b}.attn.qkv.bias": (3 * h,)})
            if qk_norm:
                keys.update({f"{b}.attn.ln_q.weight": (64,), f"{b}.attn.ln_k.weight": (64,)})
            if dual:
                keys.update({f"{b}.attn2.qkv.weight": (3 * h, h), f"{b}.attn2.proj.weight": (h, h)})
            if not pre_only:
                keys.update({f"{b}.attn.proj.weight": (h, h), f"{b}.attn.proj.bias": (h,),
                             f"{b}.mlp.fc1.weight": (4 * h, h), f"{b}.mlp.fc1.bias": (4 * h,),
                             f"{b}.mlp.fc2.weight": (h, 4 * h), f"{b}.mlp.fc2.bias": (h,)})
    return keys


def flux_original(*, guidance: bool = True, in_channels: int = 64, double: int = 19, single: int = 38) -> Shapes:
    """Black Forest Labs flux.model.Flux names."""
    h, mlp = 3072, 12288
    keys: Shapes = {"img_in.weight": (h, in_channels), "img_in.bias": (h,), "txt_in.weight": (h, 4096),
                    "txt_in.bias": (h,), "time_in.in_layer.weight": (h, 256), "time_in.out_layer.weight": (h, h),
                    "vector_in.in_layer.weight": (h, 768), "vector_in.out_layer.weight": (h, h),
                    "final_layer.linear.weight": (64, h), "final_layer.adaLN_modulation.1.weight": (2 * h, h)}
    if guidance:
        keys.update({"guidance_in.in_layer.weight": (h, 256), "guidance_in.out_layer.weight": (h, h)})
    for i in range(double):
        for side in ("img", "txt"):
            b = f"double_blocks.{i}.{side}"
            keys.update({f"{b}_mod.lin.weight": (6 * h, h), f"{b}_attn.qkv.weight": (3 * h, h),
                         f"{b}_attn.norm.query_norm.scale": (128,), f"{b}_attn.norm.key_norm.scale": (128,),
                         f"{b}_attn.proj.weight": (h, h), f"{b}_mlp.0.weight": (mlp, h), f"{b}_mlp.2.weight": (h, mlp)})
    for i in range(single):
        b = f"single_blocks.{i}"
        keys.update({f"{b}.linear1.weight": (3 * h + mlp, h), f"{b}.linear2.weight": (h, h + mlp),
                     f"{b}.norm.query_norm.scale": (128,), f"{b}.modulation.lin.weight": (3 * h, h)})
    return keys


def vae16(layouts_dir: Path) -> Shapes:
    """The SD3/FLUX autoencoder: the SD VAE with 16 latent channels and no quant convs."""
    keys = {k: v for k, v in layout_shapes(layouts_dir, "vae_sd.json").items() if "quant_conv" not in k}
    keys["encoder.conv_out.weight"] = (32, 512, 3, 3)
    keys["encoder.conv_out.bias"] = (32,)
    keys["decoder.conv_in.weight"] = (512, 16, 3, 3)
    return keys


@pytest.mark.parametrize(("config", "model"), [
    (dict(), "sd3-medium"),
    (dict(depth=38, qk_norm=True), "sd3.5-large"),
    (dict(qk_norm=True, attn2_blocks=13, pos=384), "sd3.5-medium"),
])
def test_sd3_without_text_encoders(layouts_dir: Path, config: dict, model: str) -> None:
    keys = prefixed("model.diffusion_model.", mmdit(**config)) | prefixed("first_stage_model.", vae16(layouts_dir))
    result = probe(asset_of(keys))
    assert (result.kind, result.family, result.layout) == ("pipeline", "sd3", "original")
    assert result.details["model"] == model
    assert result.details["text_encoders"] == []
    assert result.prediction_type is None
    assert result.components["vae"].family == "sd3"


def test_sd3_with_text_encoders(layouts_dir: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5EncoderModel

    keys = prefixed("model.diffusion_model.", mmdit()) | prefixed("first_stage_model.", vae16(layouts_dir))
    clip_g = on_meta(lambda: CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32, projection_dim=1280)))
    clip_l = on_meta(lambda: CLIPTextModelWithProjection(CLIPTextConfig(projection_dim=768, **CLIP_L)))
    keys |= prefixed("text_encoders.clip_g.transformer.", state_shapes(clip_g))
    keys |= prefixed("text_encoders.clip_l.transformer.", state_shapes(clip_l))
    keys |= prefixed("text_encoders.t5xxl.transformer.", state_shapes(on_meta(lambda: T5EncoderModel(T5XXL()))))
    result = probe(asset_of(keys))
    assert (result.kind, result.family) == ("pipeline", "sd3")
    assert {n: c.details["text_encoder"] for n, c in result.components.items() if c.kind == "text_encoder"} == {
        "text_encoder": "clip-l", "text_encoder_2": "openclip-bigg", "text_encoder_3": "t5-xxl"}
    assert all(c.family == "sd3" for c in result.components.values())


#: transformers' CLIPTextConfig defaults are 512 wide: the released CLIP ViT-L/14 text tower.
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)


def T5XXL():  # noqa: N802 - mirrors the transformers class names around it
    from transformers import T5Config

    return T5Config(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=32128,
                    feed_forward_proj="gated-gelu")


@pytest.mark.parametrize(("guidance", "model"), [(True, "flux.1-dev"), (False, "flux.1-schnell")])
@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_flux_original(guidance: bool, model: str, prefix: str) -> None:
    result = probe(asset_of(prefixed(prefix, flux_original(guidance=guidance)), dtype="BF16"))
    assert (result.kind, result.family, result.variant, result.layout) == ("transformer", "flux", None, "original")
    assert result.details["model"] == model
    assert result.details["depth"] == 19 and result.details["single_blocks"] == 38
    assert any("guidance_in" in line for line in result.evidence)


def test_flux_fill_is_inpaint() -> None:
    result = probe(asset_of(flux_original(in_channels=384)))
    assert (result.family, result.variant) == ("flux", "inpaint")


def test_flux_comfy_checkpoint(layouts_dir: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, T5EncoderModel

    keys = prefixed("model.diffusion_model.", flux_original(guidance=False))
    keys |= prefixed("vae.", vae16(layouts_dir))
    keys |= prefixed("text_encoders.clip_l.transformer.", state_shapes(on_meta(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L)))))
    keys |= prefixed("text_encoders.t5xxl.transformer.", state_shapes(on_meta(lambda: T5EncoderModel(T5XXL()))))
    result = probe(asset_of(keys))
    assert (result.kind, result.family) == ("pipeline", "flux")
    assert result.details["model"] == "flux.1-schnell"
    assert set(result.components) == {"transformer", "vae", "text_encoder", "text_encoder_2"}
    assert result.components["text_encoder_2"].details["text_encoder"] == "t5-xxl"


# ---- diffusers-named components (real classes on the meta device) ------------------------------------
SDXL_DIFFUSERS_UNET = dict(
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)


@pytest.fixture(scope="module")
def diffusers_unets() -> dict[str, Shapes]:
    from diffusers import UNet2DConditionModel

    return {
        "sd1": state_shapes(on_meta(lambda: UNet2DConditionModel(cross_attention_dim=768))),
        "sd1-inpaint": state_shapes(on_meta(lambda: UNet2DConditionModel(cross_attention_dim=768, in_channels=9))),
        "sd2": state_shapes(on_meta(lambda: UNet2DConditionModel(
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True))),
        "sdxl": state_shapes(on_meta(lambda: UNet2DConditionModel(**SDXL_DIFFUSERS_UNET))),
    }


@pytest.mark.parametrize(("name", "family", "variant"), [("sd1", "sd1", None), ("sd1-inpaint", "sd1", "inpaint"),
                                                         ("sd2", "sd2", None), ("sdxl", "sdxl", None)])
def test_diffusers_unet(diffusers_unets: dict, name: str, family: str, variant: str | None) -> None:
    assert verdict(diffusers_unets[name]) == ("unet", family, variant, "diffusers")


@pytest.mark.parametrize(("latent", "quant", "families"), [(4, True, {"sd1", "sd2", "sdxl"}),
                                                          (16, False, {"sd3", "flux"})])
def test_diffusers_vae_is_ambiguous(latent: int, quant: bool, families: set) -> None:
    from diffusers import AutoencoderKL

    vae = on_meta(lambda: AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=latent,
        use_quant_conv=quant, use_post_quant_conv=quant))
    result = probe(asset_of(state_shapes(vae)))
    assert (result.kind, result.family, result.layout) == ("vae", None, "diffusers")
    assert {c.family for c in result.candidates if c.kind == "vae"} == families
    assert "family-ambiguous" in {f.code for f in result.findings}
    # A config that states the scaling factor settles it.
    factor = {4: 0.13025, 16: 0.3611}[latent]
    config = {"config.json": {"_class_name": "AutoencoderKL", "latent_channels": latent, "scaling_factor": factor}}
    component = asset_of(state_shapes(vae), fmt="diffusers-component", configs=config)
    assert probe(component).family == {4: "sdxl", 16: "flux"}[latent]


def test_original_vae16_is_ambiguous(layouts_dir: Path) -> None:
    result = probe(asset_of(vae16(layouts_dir)))
    assert (result.kind, result.family) == ("vae", None)
    assert {c.family for c in result.candidates} == {"sd3", "flux"}


def test_diffusers_sd3_transformer() -> None:
    from diffusers import SD3Transformer2DModel

    model = on_meta(lambda: SD3Transformer2DModel(
        sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
        joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
        pos_embed_max_size=192))
    result = probe(asset_of(state_shapes(model)))
    assert (result.kind, result.family, result.layout) == ("transformer", "sd3", "diffusers")
    assert result.details["model"] == "sd3-medium"


@pytest.mark.parametrize(("guidance", "model"), [(True, "flux.1-dev"), (False, "flux.1-schnell")])
def test_diffusers_flux_transformer(guidance: bool, model: str) -> None:
    from diffusers import FluxTransformer2DModel

    flux = on_meta(lambda: FluxTransformer2DModel(guidance_embeds=guidance))
    result = probe(asset_of(state_shapes(flux), dtype="BF16"))
    assert (result.kind, result.family, result.layout) == ("transformer", "flux", "diffusers")
    assert result.details["model"] == model
    assert result.details["hidden_size"] == 3072


@pytest.mark.parametrize(("width", "kwargs", "type_id", "family"), [
    (768, dict(intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12), "clip-l", None),
    (1024, dict(intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23), "openclip-h", "sd2"),
    (1280, dict(intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32), "openclip-bigg", None),
])
def test_transformers_clip_text_encoders(width: int, kwargs: dict, type_id: str, family: str | None) -> None:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    model = on_meta(lambda: CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=width, projection_dim=width,
                                                                       **kwargs)))
    result = probe(asset_of(state_shapes(model)))
    assert (result.kind, result.family, result.layout) == ("text_encoder", family, "transformers")
    assert result.details["text_encoder"] == type_id
    if family is None:
        assert len({c.family for c in result.candidates}) > 1


def test_t5_xxl() -> None:
    from transformers import T5EncoderModel

    result = probe(asset_of(state_shapes(on_meta(lambda: T5EncoderModel(T5XXL())))))
    assert (result.kind, result.details["text_encoder"], result.family) == ("text_encoder", "t5-xxl", None)
    assert {c.family for c in result.candidates} == {"sd3", "flux"}


@pytest.mark.parametrize(("layout_name", "prefix", "type_id", "family"), [
    ("sd21_768v.json", "cond_stage_model.model.", "openclip-h", "sd2"),
    ("sdxl_base.json", "conditioner.embedders.1.model.", "openclip-bigg", None),
    ("sd15.json", "cond_stage_model.transformer.", "clip-l", None),
])
def test_text_encoders_in_original_names(layouts_dir: Path, layout_name: str, prefix: str, type_id: str,
                                         family: str | None) -> None:
    result = probe(asset_of(layout_shapes(layouts_dir, layout_name, prefix)))
    assert (result.kind, result.family) == ("text_encoder", family)
    assert result.details["text_encoder"] == type_id


# ---- ControlNet ------------------------------------------------------------------------------
def test_controlnet_original_unprefixed(layouts_dir: Path) -> None:
    keys = layout_shapes(layouts_dir, "controlnet_sd15.json", "control_model.")
    assert verdict(keys) == ("controlnet", "sd1", None, "original")


@pytest.mark.parametrize(("kwargs", "family"), [
    (dict(cross_attention_dim=768), "sd1"),
    (dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True), "sd2"),
    ({k: v for k, v in SDXL_DIFFUSERS_UNET.items() if k != "up_block_types"}, "sdxl"),
])
def test_controlnet_diffusers(kwargs: dict, family: str) -> None:
    from diffusers import ControlNetModel

    result = probe(asset_of(state_shapes(on_meta(lambda: ControlNetModel(**kwargs)))))
    assert (result.kind, result.family, result.layout) == ("controlnet", family, "diffusers")
    assert result.details["conditioning_channels"] == 3


# ---- T2I-Adapter and IP-Adapter -----------------------------------------------------------------
@pytest.mark.parametrize(("adapter_type", "factor", "family"), [("full_adapter", 8, "sd1"),
                                                                ("full_adapter_xl", 16, "sdxl"),
                                                                ("light_adapter", 8, "sd1")])
def test_t2i_adapter_diffusers(adapter_type: str, factor: int, family: str) -> None:
    from diffusers import T2IAdapter

    adapter = on_meta(lambda: T2IAdapter(in_channels=3, channels=[320, 640, 1280, 1280], num_res_blocks=2,
                                         downscale_factor=factor, adapter_type=adapter_type))
    result = probe(asset_of(state_shapes(adapter)))
    assert (result.kind, result.family, result.layout) == ("t2i_adapter", family, "diffusers")
    assert result.details["downscale_factor"] == factor


def test_t2i_adapter_original() -> None:
    """TencentARC Adapter(channels=[320, 640, 1280, 1280], nums_rb=2, cin=192, ksize=1, sk=True)."""
    keys: Shapes = {"conv_in.weight": (320, 192, 3, 3), "conv_in.bias": (320,)}
    channels = [320, 640, 1280, 1280]
    for i, ch in enumerate(channels):
        for j in range(2):
            b = f"body.{i * 2 + j}"
            if i and not j and channels[i - 1] != ch:
                keys[f"{b}.in_conv.weight"] = (ch, channels[i - 1], 1, 1)
                keys[f"{b}.in_conv.bias"] = (ch,)
            keys.update({f"{b}.block1.weight": (ch, ch, 3, 3), f"{b}.block1.bias": (ch,),
                         f"{b}.block2.weight": (ch, ch, 1, 1), f"{b}.block2.bias": (ch,)})
    assert verdict(keys, dtype="F32") == ("t2i_adapter", "sd1", None, "original")


def ip_adapter(unet, cross: int, embed: int, tokens: int = 4, plus: bool = False) -> Shapes:
    """IP-Adapter weights: image_proj.* and ip_adapter.N.to_{k,v}_ip for every attention processor."""
    keys: Shapes = {}
    if plus:
        keys.update({"image_proj.latents": (1, 16, 768), "image_proj.proj_in.weight": (768, embed),
                     "image_proj.proj_out.weight": (cross, 768), "image_proj.norm_out.weight": (cross,)})
    else:
        keys.update({"image_proj.proj.weight": (tokens * cross, embed), "image_proj.proj.bias": (tokens * cross,),
                     "image_proj.norm.weight": (cross,), "image_proj.norm.bias": (cross,)})
    for i, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            module = unet.get_submodule(name.rsplit(".", 1)[0])
            hidden = module.to_q.out_features
            keys[f"ip_adapter.{i}.to_k_ip.weight"] = (hidden, cross)
            keys[f"ip_adapter.{i}.to_v_ip.weight"] = (hidden, cross)
    return keys


@pytest.mark.parametrize(("family", "plus"), [("sd1", False), ("sd1", True), ("sdxl", False)])
def test_ip_adapter(family: str, plus: bool) -> None:
    from diffusers import UNet2DConditionModel

    if family == "sd1":
        unet = on_meta(lambda: UNet2DConditionModel(cross_attention_dim=768))
        keys = ip_adapter(unet, 768, 1024, plus=plus)
    else:
        unet = on_meta(lambda: UNet2DConditionModel(**SDXL_DIFFUSERS_UNET))
        keys = ip_adapter(unet, 2048, 1280)
    result = probe(asset_of(keys))
    assert (result.kind, result.family) == ("ip_adapter", family)
    assert result.details["projection"] == ("resampler" if plus else "linear")
    if family == "sd1":
        assert result.details["layers"] == 16


# ---- textual inversion ------------------------------------------------------------------------
@pytest.mark.parametrize(("keys", "meta", "family", "layout"), [
    ({"string_to_param.*": (4, 768), "string_to_token.*": ()}, {"name": "my-style", "step": 3000}, "sd1", "a1111"),
    ({"string_to_param.*": (2, 1024), "string_to_token.*": ()}, {}, "sd2", "a1111"),
    ({"emb_params": (8, 768)}, {}, "sd1", "a1111"),
    ({"clip_l": (3, 768), "clip_g": (3, 1280)}, {}, "sdxl", "kohya"),
    ({"<cat-toy>": (768,)}, {}, "sd1", "diffusers"),
    ({"<midjourney-style>": (1024,)}, {}, "sd2", "diffusers"),
])
def test_textual_inversion(keys: Shapes, meta: dict, family: str, layout: str) -> None:
    fmt = "torch-zip" if "string_to_param.*" in keys else "safetensors"
    result = probe(asset_of(keys, dtype="F32", metadata=meta, fmt=fmt))
    assert (result.kind, result.family, result.layout) == ("textual_inversion", family, layout)


# ---- LoRA formats ---------------------------------------------------------------------------------
def lora_modules(names_and_dims: dict[str, tuple[int, int]], rank: int, down: str, up: str,
                 alpha: bool = True, conv: dict[str, tuple[int, int]] | None = None) -> Shapes:
    keys: Shapes = {}
    for name, (inp, out) in names_and_dims.items():
        keys[f"{name}{down}"] = (rank, inp)
        keys[f"{name}{up}"] = (out, rank)
        if alpha:
            keys[f"{name}.alpha"] = ()
    for name, (inp, out) in (conv or {}).items():
        keys[f"{name}{down}"] = (rank, inp, 3, 3)
        keys[f"{name}{up}"] = (out, rank, 1, 1)
        if alpha:
            keys[f"{name}.alpha"] = ()
    return keys


def unet_linears(unet) -> dict[str, tuple[int, int]]:
    """Every attention/ff Linear of a diffusers UNet's transformer blocks: path -> (in, out)."""
    import torch

    return {name: (m.in_features, m.out_features) for name, m in unet.named_modules()
            if isinstance(m, torch.nn.Linear) and ".transformer_blocks." in name}


def test_kohya_sdxl_lora() -> None:
    unet = ldm_unet(**SDXL_UNET)
    modules = {}
    for key, shape in unet.items():
        if ".transformer_blocks." in key and key.endswith(".weight") and len(shape) == 2 and ".norm" not in key:
            modules["lora_unet_" + key[: -len(".weight")].replace(".", "_")] = (shape[1], shape[0])
    for i in range(12):
        modules[f"lora_te1_text_model_encoder_layers_{i}_self_attn_q_proj"] = (768, 768)
    for i in range(32):
        modules[f"lora_te2_text_model_encoder_layers_{i}_self_attn_q_proj"] = (1280, 1280)
    keys = lora_modules(modules, 16, ".lora_down.weight", ".lora_up.weight")
    meta = {"ss_base_model_version": "sdxl_base_v1-0", "ss_network_dim": "16", "ss_network_alpha": "8.0",
            "ss_network_module": "networks.lora"}
    result = probe(asset_of(keys, metadata=meta))
    assert (result.kind, result.family, result.layout) == ("lora", "sdxl", "kohya")
    assert result.details["rank"] == 16
    assert result.details["alpha"] == 8.0 and result.details["alpha_source"] == "metadata"
    assert result.details["targets"] == ["text_encoder", "text_encoder_2", "unet"]
    assert not result.findings


@pytest.mark.parametrize(("family", "context"), [("sd1", 768), ("sd2", 1024)])
def test_peft_lora(family: str, context: int) -> None:
    from diffusers import UNet2DConditionModel

    unet = on_meta(lambda: UNet2DConditionModel(cross_attention_dim=context))
    modules = {f"unet.{name}": dims for name, dims in unet_linears(unet).items()}
    keys = lora_modules(modules, 8, ".lora_A.weight", ".lora_B.weight", alpha=False)
    result = probe(asset_of(keys))
    assert (result.kind, result.family, result.layout) == ("lora", family, "peft")
    assert result.details["rank"] == 8 and result.details["alpha"] is None
    assert result.details["targets"] == ["unet"]


def test_diffusers_attention_processor_lora() -> None:
    from diffusers import UNet2DConditionModel

    unet = on_meta(lambda: UNet2DConditionModel(cross_attention_dim=768))
    keys: Shapes = {}
    for name in unet.attn_processors:
        attn = unet.get_submodule(name.rsplit(".", 1)[0])
        hidden, cross = attn.to_q.out_features, attn.to_k.in_features
        for proj, inp in (("to_q", hidden), ("to_k", cross), ("to_v", cross), ("to_out", hidden)):
            keys[f"{name}.{proj}_lora.down.weight"] = (4, inp)
            keys[f"{name}.{proj}_lora.up.weight"] = (hidden, 4)
    result = probe(asset_of(keys, dtype="F32"))
    assert (result.kind, result.family, result.layout) == ("lora", "sd1", "diffusers-attn-procs")
    assert result.details["rank"] == 4


def test_locon() -> None:
    linear = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (768, 320)}
    conv = {"lora_unet_down_blocks_0_resnets_0_conv1": (320, 320), "lora_unet_up_blocks_3_resnets_2_conv2": (320, 320)}
    keys = lora_modules(linear, 8, ".lora_down.weight", ".lora_up.weight", conv=conv)
    result = probe(asset_of(keys))
    assert (result.kind, result.family, result.layout) == ("lora", "sd1", "lycoris")
    assert result.details["algo"] == "locon"


def test_loha() -> None:
    keys: Shapes = {}
    for name, (inp, out) in {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (768, 640),
                             "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (768, 768)}.items():
        keys.update({f"{name}.hada_w1_a": (out, 4), f"{name}.hada_w1_b": (4, inp),
                     f"{name}.hada_w2_a": (out, 4), f"{name}.hada_w2_b": (4, inp), f"{name}.alpha": ()})
    result = probe(asset_of(keys, metadata={"ss_network_module": "lycoris.kohya",
                                            "ss_network_args": '{"algo": "loha", "conv_dim": "4"}'}))
    assert (result.kind, result.family, result.layout) == ("lora", "sd1", "lycoris")
    assert (result.details["algo"], result.details["rank"]) == ("loha", 4)


def test_lokr() -> None:
    keys: Shapes = {}
    for name in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
                 "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q"):
        keys.update({f"{name}.lokr_w1": (8, 8), f"{name}.lokr_w2_a": (80, 16), f"{name}.lokr_w2_b": (16, 256),
                     f"{name}.alpha": ()})
    result = probe(asset_of(keys, metadata={"ss_base_model_version": "sdxl_base_v1-0"}))
    assert (result.kind, result.family, result.layout) == ("lora", "sdxl", "lycoris")
    assert result.details["algo"] == "lokr"


def test_flux_loras() -> None:
    kohya = lora_modules({f"lora_unet_double_blocks_{i}_img_attn_qkv": (3072, 9216) for i in range(19)}
                         | {f"lora_unet_single_blocks_{i}_linear1": (3072, 21504) for i in range(38)},
                         16, ".lora_down.weight", ".lora_up.weight")
    result = probe(asset_of(kohya))
    assert (result.kind, result.family, result.layout) == ("lora", "flux", "kohya")
    assert result.details["targets"] == ["transformer"]
    peft = lora_modules({f"transformer.transformer_blocks.{i}.attn.to_q": (3072, 3072) for i in range(19)},
                        4, ".lora_A.weight", ".lora_B.weight", alpha=False)
    result = probe(asset_of(peft))
    assert (result.kind, result.family, result.layout) == ("lora", "flux", "peft")


def test_sd3_peft_lora() -> None:
    peft = lora_modules({f"transformer.transformer_blocks.{i}.attn.{p}": (1536, 1536)
                         for i in range(24) for p in ("to_q", "add_q_proj")}, 4, ".lora_A.weight", ".lora_B.weight",
                        alpha=False)
    assert verdict(peft) == ("lora", "sd3", None, "peft")


# ---- metadata ----------------------------------------------------------------------------------
def test_modelspec_flux_contradiction() -> None:
    result = probe(asset_of(flux_original(guidance=True),
                            metadata={"modelspec.architecture": "flux-1-schnell"}))
    assert result.family == "flux"
    assert result.details["model"] == "flux.1-dev"


def test_unknown_is_unknown() -> None:
    result = probe(asset_of({"foo.bar.weight": (3, 3), "baz": (7,)}))
    assert (result.kind, result.family) == ("unknown", None)
    assert "foo" in result.evidence[0]
