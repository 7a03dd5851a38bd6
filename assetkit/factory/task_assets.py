"""Tiny parts for the IP-Adapter and image-to-image / inpainting tests: a CLIP image encoder, an
IP-Adapter file (original ``image_proj.*`` + ``ip_adapter.N.*`` names, as the released
``ip-adapter_sd15.safetensors``) sized for a given base UNet, and an SD1 inpainting pipeline
(9-channel UNet).

The IP-Adapter's layer numbering is the one diffusers' loader walks (its UNet's attention
processors in order, ``1, 3, 5...`` for the cross-attention layers), taken from the UNet that
diffusers itself builds from the base's config. torch, diffusers and transformers are imported
inside the functions only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: image tokens of a plain (linear-projection) IP-Adapter
IP_TOKENS = 4


def save_tiny_image_encoder(dest: str | Path, *, projection_dim: int = 32, hidden_size: int = 32,
                            image_size: int = 32, seed: int = 0) -> Path:
    """A one-layer ``CLIPVisionModelWithProjection`` folder (``config.json`` + ``model.safetensors``);
    its image embeddings are ``projection_dim`` wide."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from .diffusers_models import quiet_libraries

    quiet_libraries()
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=hidden_size, intermediate_size=37, num_hidden_layers=1,
                              num_attention_heads=4, image_size=image_size, patch_size=8,
                              projection_dim=projection_dim, hidden_act="quick_gelu")
    model = CLIPVisionModelWithProjection(config)
    model.save_pretrained(str(dest))
    return Path(dest)


def save_tiny_ip_adapter(base: str | Path, dest: str | Path, *, image_embed_dim: int = 32,
                         cross_attention_dim: int | None = None, seed: int = 0, strength: float = 1.0) -> Path:
    """An IP-Adapter ``.safetensors`` for the UNet of the diffusers pipeline folder ``base``:
    a linear image projection from ``image_embed_dim`` to 4 tokens and ``to_k_ip``/``to_v_ip``
    for every cross-attention layer. ``cross_attention_dim`` other than the UNet's makes one that
    does not fit. Weights are seeded noise, so the adapter changes the output."""
    from diffusers import UNet2DConditionModel
    from safetensors.numpy import save_file

    from .diffusers_models import quiet_libraries

    quiet_libraries()
    unet = UNet2DConditionModel.from_pretrained(str(Path(base) / "unet"))
    cross = cross_attention_dim or unet.config.cross_attention_dim
    rng = np.random.default_rng(seed)

    def noise(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * strength / np.sqrt(shape[-1])).astype(np.float32)

    tensors: dict[str, np.ndarray] = {
        "image_proj.proj.weight": noise(IP_TOKENS * cross, image_embed_dim),
        "image_proj.proj.bias": np.zeros(IP_TOKENS * cross, dtype=np.float32),
        "image_proj.norm.weight": np.ones(cross, dtype=np.float32),
        "image_proj.norm.bias": np.zeros(cross, dtype=np.float32),
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = unet.get_submodule(name.removesuffix(".processor")).to_q.in_features
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = noise(hidden, cross)
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = noise(hidden, cross)
        key_id += 2
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest), metadata={"format": "pt"})
    return dest


def save_tiny_inpaint_pipeline(dest: str | Path, *, seed: int = 0) -> Path:
    """A ``StableDiffusionInpaintPipeline`` folder: the tiny SD1 pipeline with a 9-channel UNet
    (latent + mask + masked-image latent), as sd-v1-5-inpainting."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    from .diffusers_models import quiet_libraries, tiny_sd1_pipeline

    quiet_libraries()
    plain = tiny_sd1_pipeline(seed=seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({**plain.unet.config, "in_channels": 9})
    pipe = StableDiffusionInpaintPipeline(vae=plain.vae, text_encoder=plain.text_encoder, tokenizer=plain.tokenizer,
                                          unet=unet, scheduler=plain.scheduler, safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(dest))
    return Path(dest)
