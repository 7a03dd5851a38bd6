"""Layouts in diffusers/transformers naming, taken from the libraries themselves.

Each function instantiates the real diffusers (or transformers) class with the released
configuration on torch's ``meta`` device - no memory, no download - and reads ``state_dict()``:
the names and full-size shapes are whatever the installed library registers, which makes them an
independent reference for assetkit's converters. torch and diffusers are imported inside the
functions only; results are cached per process.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .layouts import Layout, TensorDecl, with_dtype

_TORCH_TO_ST = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
                "float64": "F64", "uint8": "U8", "bool": "BOOL"}

#: diffusers ``UNet2DConditionModel`` configs of the released models.
DIFFUSERS_UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "sd1": {"cross_attention_dim": 768, "attention_head_dim": 8},
    "sd2": {"cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True},
    "sdxl": {"block_out_channels": [320, 640, 1280],
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
             "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
             "cross_attention_dim": 2048, "use_linear_projection": True, "addition_embed_type": "text_time",
             "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816},
    "sdxl-refiner": {"block_out_channels": [384, 768, 1536, 1536],
                     "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                          "DownBlock2D"],
                     "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                     "transformer_layers_per_block": 4, "attention_head_dim": [6, 12, 24, 24],
                     "cross_attention_dim": 1280, "use_linear_projection": True,
                     "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                     "projection_class_embeddings_input_dim": 2560},
}


def _state_dict_layout(module: Any, dtype: str | None = None) -> Layout:
    layout: Layout = {}
    for name, tensor in module.state_dict().items():
        layout[name] = TensorDecl(tuple(tensor.shape), _TORCH_TO_ST[str(tensor.dtype).removeprefix("torch.")])
    return with_dtype(layout, dtype) if dtype else layout


def _on_meta(factory: Any) -> Any:
    import torch

    with torch.device("meta"):
        return factory()


@lru_cache(maxsize=16)
def _unet(family: str, in_channels: int) -> Any:
    from diffusers import UNet2DConditionModel

    config = dict(DIFFUSERS_UNET_CONFIGS[family], in_channels=in_channels)
    return _on_meta(lambda: UNet2DConditionModel(**config))


def diffusers_unet(family: str = "sd1", *, in_channels: int = 4, dtype: str = "F32", prefix: str = "") -> Layout:
    """``unet/diffusion_pytorch_model.safetensors`` of the family's diffusers release."""
    layout = _state_dict_layout(_unet(family, in_channels), dtype)
    return {prefix + k: v for k, v in layout.items()}


@lru_cache(maxsize=4)
def _vae(latent_channels: int, quant: bool) -> Any:
    from diffusers import AutoencoderKL

    kwargs: dict[str, Any] = {
        "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": latent_channels,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    }
    if not quant:
        kwargs.update(use_quant_conv=False, use_post_quant_conv=False)
    return _on_meta(lambda: AutoencoderKL(**kwargs))


def diffusers_vae(*, latent_channels: int = 4, quant_conv: bool = True, dtype: str = "F32", prefix: str = "") -> Layout:
    """diffusers ``AutoencoderKL`` (``vae/diffusion_pytorch_model.safetensors``); 16 channels and
    no quant convs for SD3/Flux."""
    layout = _state_dict_layout(_vae(latent_channels, quant_conv), dtype)
    return {prefix + k: v for k, v in layout.items()}


@lru_cache(maxsize=2)
def _sd3(model: str) -> Any:
    from diffusers import SD3Transformer2DModel

    if model == "sd3.5-large":
        config = {"num_layers": 38, "num_attention_heads": 38, "caption_projection_dim": 2432, "qk_norm": "rms_norm"}
    else:
        config = {"num_layers": 24, "num_attention_heads": 24, "caption_projection_dim": 1536}
    config.update(sample_size=128, patch_size=2, in_channels=16, out_channels=16, attention_head_dim=64,
                  joint_attention_dim=4096, pooled_projection_dim=2048, pos_embed_max_size=192)
    return _on_meta(lambda: SD3Transformer2DModel(**config))


def diffusers_sd3_transformer(model: str = "sd3-medium", *, dtype: str = "F16") -> Layout:
    """``transformer/`` of stabilityai/stable-diffusion-3-medium-diffusers (or 3.5 large)."""
    return _state_dict_layout(_sd3(model), dtype)


@lru_cache(maxsize=2)
def _flux(guidance: bool) -> Any:
    from diffusers import FluxTransformer2DModel

    return _on_meta(lambda: FluxTransformer2DModel(guidance_embeds=guidance))


def diffusers_flux_transformer(*, guidance: bool = True, dtype: str = "BF16") -> Layout:
    """``transformer/`` of black-forest-labs/FLUX.1-dev (``guidance``) or -schnell."""
    return _state_dict_layout(_flux(guidance), dtype)


@lru_cache(maxsize=4)
def _controlnet(family: str) -> Any:
    from diffusers import ControlNetModel

    config = {k: v for k, v in DIFFUSERS_UNET_CONFIGS[family].items() if k != "up_block_types"}
    return _on_meta(lambda: ControlNetModel(**config))


def diffusers_controlnet(family: str = "sd1", *, dtype: str = "F32") -> Layout:
    """diffusers ``ControlNetModel`` (e.g. lllyasviel/control_v11p_sd15_canny, diffusers/controlnet-canny-sdxl-1.0)."""
    return _state_dict_layout(_controlnet(family), dtype)


@lru_cache(maxsize=2)
def _t2i(xl: bool) -> Any:
    from diffusers import T2IAdapter

    if xl:
        return _on_meta(lambda: T2IAdapter(in_channels=3, channels=[320, 640, 1280, 1280], num_res_blocks=2,
                                           downscale_factor=16, adapter_type="full_adapter_xl"))
    return _on_meta(lambda: T2IAdapter(in_channels=3, channels=[320, 640, 1280, 1280], num_res_blocks=2,
                                       downscale_factor=8, adapter_type="full_adapter"))


def diffusers_t2i_adapter(*, xl: bool = False, dtype: str = "F32") -> Layout:
    """diffusers ``T2IAdapter`` (TencentARC/t2iadapter_*_sd15v2, t2i-adapter-*-sdxl-1.0)."""
    return _state_dict_layout(_t2i(xl), dtype)


def transformers_clip_text(*, width: int = 768, layers: int = 12, mlp: int = 3072, heads: int = 12,
                           projection: int | None = None, dtype: str = "F32") -> Layout:
    """transformers ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` state_dict (current version)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(hidden_size=width, num_hidden_layers=layers, intermediate_size=mlp,
                            num_attention_heads=heads, projection_dim=projection or width)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _state_dict_layout(_on_meta(lambda: cls(config)), dtype)


def transformers_t5_encoder(*, dtype: str = "F16") -> Layout:
    """transformers ``T5EncoderModel`` of google/t5-v1_1-xxl (text_encoder_3 / text_encoder_2)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=32128,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)
    return _state_dict_layout(_on_meta(lambda: T5EncoderModel(config)), dtype)


# --- module lists that LoRA / IP-Adapter layouts are built on -------------------------------------


def unet_attention_projections(family: str = "sd1") -> dict[str, tuple[int, int]]:
    """Every ``to_q/to_k/to_v/to_out.0`` Linear of the diffusers UNet -> (out, in) features:
    the default target modules of diffusers' LoRA training scripts."""
    unet = _unet(family, 4)
    found: dict[str, tuple[int, int]] = {}
    for name, module in unet.named_modules():
        if name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")) and hasattr(module, "weight"):
            found[name] = (int(module.weight.shape[0]), int(module.weight.shape[1]))
    return found


def unet_attention_processors(family: str = "sd1") -> list[tuple[str, int, int]]:
    """The UNet's attention modules in ``attn_processors`` order: (path, hidden size, context dim)."""
    unet = _unet(family, 4)
    result = []
    for processor_name in unet.attn_processors:
        path = processor_name.removesuffix(".processor")
        attention = unet.get_submodule(path)
        result.append((path, int(attention.to_q.weight.shape[0]), int(attention.to_k.weight.shape[1])))
    return result


def unet_resnet_convs(family: str = "sd1") -> dict[str, tuple[int, int, int]]:
    """The 3x3 convs of the UNet's ResNet blocks (``...resnets.N.conv1/conv2``) -> (out, in, k):
    what LyCORIS LoCon / kohya ``conv_dim`` adapt besides the attention layers."""
    found: dict[str, tuple[int, int, int]] = {}
    for name, module in _unet(family, 4).named_modules():
        if ".resnets." in name and name.endswith((".conv1", ".conv2")):
            out_c, in_c, k, _ = module.weight.shape
            found[name] = (int(out_c), int(in_c), int(k))
    return found


def flux_attention_projections(guidance: bool = True) -> dict[str, tuple[int, int]]:
    """The attention projections of the diffusers Flux transformer -> (out, in): the default
    targets of diffusers' Flux LoRA training (``to_q/k/v``, ``to_out.0``, ``add_*_proj``, ``to_add_out``)."""
    suffixes = (".to_q", ".to_k", ".to_v", ".to_out.0", ".add_q_proj", ".add_k_proj", ".add_v_proj", ".to_add_out")
    found: dict[str, tuple[int, int]] = {}
    for name, module in _flux(guidance).named_modules():
        if name.endswith(suffixes) and hasattr(module, "weight"):
            found[name] = (int(module.weight.shape[0]), int(module.weight.shape[1]))
    return found


def kohya_unet_modules_diffusers(family: str = "sd1") -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """kohya SD1/SD2 module names (sd-scripts uses diffusers-style U-Net module names): every Linear
    and 1x1 conv of the Transformer2DModel blocks, ``lora_unet_down_blocks_0_attentions_0_proj_in``."""
    unet = _unet(family, 4)
    modules: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for name, module in unet.named_modules():
        if ".attentions." not in name or not hasattr(module, "weight") or module.weight is None:
            continue
        shape = tuple(module.weight.shape)
        if type(module).__name__ == "Linear":
            modules["lora_unet_" + name.replace(".", "_")] = ((shape[1],), (shape[0],))
        elif type(module).__name__ == "Conv2d" and shape[2:] == (1, 1):
            modules["lora_unet_" + name.replace(".", "_")] = ((shape[1], 1, 1), (shape[0], 1, 1))
    return modules
