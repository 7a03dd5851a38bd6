"""A tiny SD2-depth pair: an original-layout checkpoint (``512-depth-ema.ckpt`` names: the
5-channel UNet, VAE, OpenCLIP text tower and the MiDaS DPT-Hybrid under ``depth_model.model.``)
and a ``StableDiffusionDepth2ImgPipeline`` of the same small widths saved by diffusers and
transformers, whose configs describe the checkpoint. The two are built independently: the
checkpoint's names come from :mod:`.keys`, the pipeline's from the libraries' own classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import keys as K
from .layouts import Layout

#: Hyper-parameters of the tiny depth model, shared by the checkpoint and the transformers config.
DPT_WIDTH, DPT_LAYERS, DPT_MLP, DPT_IMAGE, DPT_PATCH = 32, 4, 64, 64, 16
DPT_STEM, DPT_STAGES = 16, ((1, 32), (1, 64), (2, 128))
DPT_FEATURES, DPT_FUSION = (16, 32, 32, 32), 16
TEXT_WIDTH, TEXT_LAYERS = 32, 2  #: the file holds one block more than the config uses (as SD2 does)


def tiny_dpt_config() -> Any:
    """transformers ``DPTConfig`` (hybrid, MiDaS settings) of the tiny depth model."""
    from transformers import DPTConfig

    grid = DPT_IMAGE // DPT_PATCH
    return DPTConfig(
        is_hybrid=True, hidden_size=DPT_WIDTH, num_hidden_layers=DPT_LAYERS, num_attention_heads=2,
        intermediate_size=DPT_MLP, image_size=DPT_IMAGE, patch_size=DPT_PATCH, backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=list(DPT_FEATURES), fusion_hidden_size=DPT_FUSION, reassemble_factors=[1, 1, 1, 0.5],
        readout_type="project", use_batch_norm_in_fusion_residual=False,
        backbone_featmap_shape=[1, DPT_STAGES[-1][1], grid, grid], architectures=["DPTForDepthEstimation"],
        backbone_config={"model_type": "bit", "global_padding": "same", "layer_type": "bottleneck",
                         "depths": [b for b, _ in DPT_STAGES], "hidden_sizes": [c for _, c in DPT_STAGES] + [256],
                         "embedding_size": DPT_STEM, "num_groups": 8, "out_features": ["stage1", "stage2", "stage3"],
                         "embedding_dynamic_padding": True})


def tiny_midas(prefix: str = "depth_model.model.", dtype: str = "F32", *, classifier: int | None = None) -> Layout:
    """The MiDaS DPT-Hybrid names at the tiny widths of :func:`tiny_dpt_config` (``classifier``:
    with timm's ImageNet head of that many classes)."""
    grid = DPT_IMAGE // DPT_PATCH
    return K.midas_dpt_hybrid(dtype, prefix, width=DPT_WIDTH, layers=DPT_LAYERS, mlp=DPT_MLP, tokens=grid * grid + 1,
                              stem=DPT_STEM, stages=DPT_STAGES, features=DPT_FEATURES, fusion=DPT_FUSION,
                              classifier=classifier)


def tiny_sd2_depth_original(dtype: str = "F32") -> Layout:
    """The whole tiny original-layout checkpoint (names and shapes)."""
    layout: Layout = {}
    layout.update(K.ldm_unet(in_channels=5, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                             attention_levels=(0,), context_dim=TEXT_WIDTH, use_linear=True, dtype=dtype))
    layout.update(K.ldm_vae(ch=32, ch_mult=(1, 2), num_res_blocks=1, dtype=dtype, prefix="first_stage_model."))
    layout.update(K.open_clip_text(width=TEXT_WIDTH, layers=TEXT_LAYERS, mlp=64, dtype=dtype,
                                   prefix="cond_stage_model.model."))
    layout.update(tiny_midas(dtype=dtype))
    return layout


def write_tiny_sd2_depth_original(dest: str | Path, *, seed: int = 0) -> Path:
    """:func:`tiny_sd2_depth_original` with seeded values, saved by the safetensors library."""
    from safetensors.numpy import save_file

    from .writers import materialize

    save_file(materialize(tiny_sd2_depth_original(), shrink=False, seed=seed), str(dest))
    return Path(dest)


def save_tiny_sd2_depth_pipeline(dest: str | Path, *, seed: int = 0) -> Path:
    """A ``StableDiffusionDepth2ImgPipeline`` of the same widths, random weights, saved by diffusers
    (its folder doubles as the ``--config`` folder of the tiny checkpoint)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionDepth2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, DPTForDepthEstimation, DPTImageProcessor

    from .diffusers_models import quiet_libraries, tiny_clip_tokenizer

    quiet_libraries()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, in_channels=5, sample_size=16,
                                norm_num_groups=32, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, cross_attention_dim=TEXT_WIDTH)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32, sample_size=32)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=64,
                                        num_hidden_layers=TEXT_LAYERS - 1, num_attention_heads=4,
                                        max_position_embeddings=77, hidden_act="gelu"))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    pipe = StableDiffusionDepth2ImgPipeline(
        vae=vae, text_encoder=text, tokenizer=tiny_clip_tokenizer(pad_token="!"), unet=unet, scheduler=scheduler,
        depth_estimator=DPTForDepthEstimation(tiny_dpt_config()), feature_extractor=DPTImageProcessor(size=DPT_IMAGE))
    pipe.save_pretrained(str(dest))
    return Path(dest)
