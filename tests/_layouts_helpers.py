"""Tiny diffusers pipelines (saved by diffusers itself) for the layout-conversion tests, and
helpers that compare tensors through the safetensors library (an independent reader)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from assetkit.catalogue import clip_tokenizer_files


def save_tiny_sd2_pipeline(dest: Path, *, layers: int = 1, seed: int = 0) -> Path:
    """A tiny SD2-like pipeline: linear transformer projections, an OpenCLIP-style (gelu) text
    encoder, v-prediction DDIM scheduler, the real CLIP tokenizer (pad ``!``)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from assetkit.factory.diffusers_models import quiet_libraries

    quiet_libraries()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, norm_num_groups=32,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, cross_attention_dim=32)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32, sample_size=32)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                      num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
                                      projection_dim=16))
    tok_dir = dest.parent / f"{dest.name}-tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    for name, data in clip_tokenizer_files("openclip-h").items():
        (tok_dir / name).write_bytes(data)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(dest))
    return dest


def folder_tensors(folder: Path) -> dict[str, bytes]:
    """``component/name -> raw bytes`` of every safetensors weight file of a diffusers folder."""
    from safetensors import safe_open

    out: dict[str, bytes] = {}
    for path in sorted(Path(folder).glob("*/*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            for name in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                out[f"{path.parent.name}/{name}"] = tensor_key(fh.get_tensor(name))
    return out


def file_tensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return {name: tensor_key(fh.get_tensor(name)) for name in fh.keys()}  # noqa: SIM118


def tensor_key(t: Any) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype, shape, bytes) of a torch tensor: equal keys are bit-identical tensors."""
    import torch

    t = t.detach().contiguous().cpu()
    raw = t.reshape(-1).view(torch.uint8) if t.numel() else t
    return (str(t.dtype), tuple(t.shape), bytes(raw.numpy().tobytes()))


def pipeline_tensors(pipe: Any) -> dict[str, Any]:
    """``component/name -> tensor_key`` for every torch module of a diffusers pipeline."""
    import torch

    out = {}
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            for key, t in module.state_dict().items():
                out[f"{name}/{key}"] = tensor_key(t)
    return out


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_tiny_sdxl_pipeline(dest: Path, *, seed: int = 0) -> Path:
    """A tiny SDXL pipeline whose two text encoders have different widths (32 and 48), as the
    real ones do: diffusers' ``from_single_file`` tells them apart by width."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    from assetkit.factory.diffusers_models import (
        _scheduler,
        quiet_libraries,
        tiny_clip_tokenizer,
        tiny_text_encoder,
        tiny_vae,
    )

    quiet_libraries()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, norm_num_groups=32,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                transformer_layers_per_block=(1, 2), use_linear_projection=True,
                                cross_attention_dim=80, addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=48 + 6 * 8)
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(seed=seed), text_encoder=tiny_text_encoder(32, seed=seed),
        text_encoder_2=tiny_text_encoder(48, projection=True, seed=seed + 1),
        tokenizer=tiny_clip_tokenizer(), tokenizer_2=tiny_clip_tokenizer(pad_token="!"), unet=unet,
        scheduler=_scheduler(True))
    pipe.save_pretrained(str(dest))
    return dest
