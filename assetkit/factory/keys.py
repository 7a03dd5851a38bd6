"""Real tensor names (and full-size shapes) of released checkpoints, generated from their configs.

Each function rebuilds, from the architecture's hyper-parameters, the ``state_dict`` names that
the reference implementation registers, in the reference naming:

* :func:`ldm_unet` - the CompVis/Stability ``openaimodel.UNetModel`` (SD1, SD2, SDXL, refiner,
  inpaint/pix2pix/depth variants), :func:`ldm_controlnet` - lllyasviel's ``cldm.ControlNet``;
* :func:`ldm_vae` - ``ldm.models.autoencoder.AutoencoderKL`` (4- and 16-channel latents);
* :func:`hf_clip_text` - transformers ``CLIPTextModel`` (+ projection), :func:`open_clip_text` -
  the open_clip text tower, :func:`t5_encoder` - transformers ``T5EncoderModel``;
* :func:`mmdit` - SD3/SD3.5 MMDiT, :func:`flux` - Black Forest Labs' Flux.1;
* LoRA flavours (kohya, LyCORIS, peft, old diffusers attention processors), textual inversion,
  IP-Adapter, T2I-Adapter, the MiDaS depth model of SD2-depth.

The generators for which ``../shared/layouts`` has a reference are checked against it by the
tests (same names, shapes and dtypes), which is what makes the others trustworthy: they are the
same code with other hyper-parameters. No torch here: names and shapes are plain data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .layouts import Layout, TensorDecl

# --- building blocks -------------------------------------------------------------------------------


def _put(layout: Layout, name: str, shape: Sequence[int], dtype: str) -> None:
    layout[name] = TensorDecl(tuple(int(d) for d in shape), dtype)


def _linear(layout: Layout, name: str, out_f: int, in_f: int, dtype: str, bias: bool = True) -> None:
    _put(layout, f"{name}.weight", (out_f, in_f), dtype)
    if bias:
        _put(layout, f"{name}.bias", (out_f,), dtype)


def _conv(layout: Layout, name: str, out_c: int, in_c: int, k: int, dtype: str, bias: bool = True) -> None:
    _put(layout, f"{name}.weight", (out_c, in_c, k, k), dtype)
    if bias:
        _put(layout, f"{name}.bias", (out_c,), dtype)


def _norm(layout: Layout, name: str, channels: int, dtype: str, bias: bool = True) -> None:
    _put(layout, f"{name}.weight", (channels,), dtype)
    if bias:
        _put(layout, f"{name}.bias", (channels,), dtype)


# --- ldm / sgm UNet ---------------------------------------------------------------------------------


def _ldm_resblock(layout: Layout, p: str, ch_in: int, ch_out: int, emb: int, dtype: str) -> None:
    _norm(layout, f"{p}.in_layers.0", ch_in, dtype)
    _conv(layout, f"{p}.in_layers.2", ch_out, ch_in, 3, dtype)
    _linear(layout, f"{p}.emb_layers.1", ch_out, emb, dtype)
    _norm(layout, f"{p}.out_layers.0", ch_out, dtype)
    _conv(layout, f"{p}.out_layers.3", ch_out, ch_out, 3, dtype)
    if ch_in != ch_out:
        _conv(layout, f"{p}.skip_connection", ch_out, ch_in, 1, dtype)


def _ldm_spatial_transformer(layout: Layout, p: str, ch: int, depth: int, context_dim: int,
                             use_linear: bool, dtype: str) -> None:
    inner = ch
    _norm(layout, f"{p}.norm", ch, dtype)
    if use_linear:
        _linear(layout, f"{p}.proj_in", inner, ch, dtype)
    else:
        _conv(layout, f"{p}.proj_in", inner, ch, 1, dtype)
    for d in range(depth):
        b = f"{p}.transformer_blocks.{d}"
        for q in ("to_q", "to_k", "to_v"):
            _linear(layout, f"{b}.attn1.{q}", inner, inner, dtype, bias=False)
        _linear(layout, f"{b}.attn1.to_out.0", inner, inner, dtype)
        _linear(layout, f"{b}.ff.net.0.proj", inner * 8, inner, dtype)  # GEGLU: 2 x 4 x inner
        _linear(layout, f"{b}.ff.net.2", inner, inner * 4, dtype)
        _linear(layout, f"{b}.attn2.to_q", inner, inner, dtype, bias=False)
        _linear(layout, f"{b}.attn2.to_k", inner, context_dim, dtype, bias=False)
        _linear(layout, f"{b}.attn2.to_v", inner, context_dim, dtype, bias=False)
        _linear(layout, f"{b}.attn2.to_out.0", inner, inner, dtype)
        for n in ("norm1", "norm2", "norm3"):
            _norm(layout, f"{b}.{n}", inner, dtype)
    if use_linear:
        _linear(layout, f"{p}.proj_out", ch, inner, dtype)
    else:
        _conv(layout, f"{p}.proj_out", ch, inner, 1, dtype)


def _ldm_encoder(layout: Layout, p: str, *, in_channels: int, model_channels: int,
                 channel_mult: Sequence[int], num_res_blocks: int, attention_levels: Sequence[int],
                 transformer_depth: Sequence[int], middle_depth: int, context_dim: int,
                 use_linear: bool, adm_in_channels: int | None, dtype: str,
                 zero_convs: bool = False) -> tuple[int, list[int]]:
    """time_embed, label_emb, input_blocks, middle_block; returns (channels, skip channels)."""
    emb = model_channels * 4
    _linear(layout, f"{p}time_embed.0", emb, model_channels, dtype)
    _linear(layout, f"{p}time_embed.2", emb, emb, dtype)
    if adm_in_channels is not None:
        _linear(layout, f"{p}label_emb.0.0", emb, adm_in_channels, dtype)
        _linear(layout, f"{p}label_emb.0.2", emb, emb, dtype)
    _conv(layout, f"{p}input_blocks.0.0", model_channels, in_channels, 3, dtype)
    ch = model_channels
    skips = [ch]
    block = 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            out = model_channels * mult
            _ldm_resblock(layout, f"{p}input_blocks.{block}.0", ch, out, emb, dtype)
            ch = out
            if level in attention_levels:
                _ldm_spatial_transformer(layout, f"{p}input_blocks.{block}.1", ch, transformer_depth[level],
                                         context_dim, use_linear, dtype)
            skips.append(ch)
            block += 1
        if level != len(channel_mult) - 1:
            _conv(layout, f"{p}input_blocks.{block}.0.op", ch, ch, 3, dtype)
            skips.append(ch)
            block += 1
    if zero_convs:
        for i, c in enumerate(skips):
            _conv(layout, f"{p}zero_convs.{i}.0", c, c, 1, dtype)
    _ldm_resblock(layout, f"{p}middle_block.0", ch, ch, emb, dtype)
    _ldm_spatial_transformer(layout, f"{p}middle_block.1", ch, middle_depth, context_dim, use_linear, dtype)
    _ldm_resblock(layout, f"{p}middle_block.2", ch, ch, emb, dtype)
    return ch, skips


def ldm_unet(*, in_channels: int = 4, out_channels: int = 4, model_channels: int = 320,
             channel_mult: Sequence[int] = (1, 2, 4, 4), num_res_blocks: int = 2,
             attention_levels: Sequence[int] = (0, 1, 2), transformer_depth: Sequence[int] | int = 1,
             middle_depth: int | None = None, context_dim: int = 768, use_linear: bool = False,
             adm_in_channels: int | None = None, dtype: str = "F32",
             prefix: str = "model.diffusion_model.") -> Layout:
    """The ldm/sgm ``UNetModel`` state_dict. Defaults are SD1.x (v1-inference.yaml)."""
    depths = [transformer_depth] * len(channel_mult) if isinstance(transformer_depth, int) else list(transformer_depth)
    middle = depths[-1] if middle_depth is None else middle_depth
    layout: Layout = {}
    ch, skips = _ldm_encoder(layout, prefix, in_channels=in_channels, model_channels=model_channels,
                             channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                             attention_levels=attention_levels, transformer_depth=depths,
                             middle_depth=middle, context_dim=context_dim, use_linear=use_linear,
                             adm_in_channels=adm_in_channels, dtype=dtype)
    emb = model_channels * 4
    block = 0
    for level in reversed(range(len(channel_mult))):
        for i in range(num_res_blocks + 1):
            out = model_channels * channel_mult[level]
            _ldm_resblock(layout, f"{prefix}output_blocks.{block}.0", ch + skips.pop(), out, emb, dtype)
            ch = out
            index = 1
            if level in attention_levels:
                _ldm_spatial_transformer(layout, f"{prefix}output_blocks.{block}.1", ch, depths[level],
                                         context_dim, use_linear, dtype)
                index = 2
            if level and i == num_res_blocks:
                _conv(layout, f"{prefix}output_blocks.{block}.{index}.conv", ch, ch, 3, dtype)
            block += 1
    _norm(layout, f"{prefix}out.0", ch, dtype)
    _conv(layout, f"{prefix}out.2", out_channels, model_channels, 3, dtype)
    return layout


#: Hyper-parameters of the released UNets (reference YAML configs).
UNET_CONFIGS: dict[str, dict] = {
    "sd1": {},
    "sd2": {"context_dim": 1024, "use_linear": True},
    "sdxl": {"channel_mult": (1, 2, 4), "attention_levels": (1, 2), "transformer_depth": (1, 2, 10),
             "context_dim": 2048, "use_linear": True, "adm_in_channels": 2816},
    "sdxl-refiner": {"model_channels": 384, "channel_mult": (1, 2, 4, 4), "attention_levels": (1, 2),
                     "transformer_depth": 4, "context_dim": 1280, "use_linear": True, "adm_in_channels": 2560},
}


def ldm_controlnet(*, hint_channels: int = 3, model_channels: int = 320,
                   channel_mult: Sequence[int] = (1, 2, 4, 4), num_res_blocks: int = 2,
                   attention_levels: Sequence[int] = (0, 1, 2), transformer_depth: Sequence[int] | int = 1,
                   middle_depth: int | None = None, context_dim: int = 768, use_linear: bool = False,
                   adm_in_channels: int | None = None, dtype: str = "F32",
                   prefix: str = "control_model.") -> Layout:
    """lllyasviel's ``cldm.ControlNet`` (ControlNet 1.0/1.1): UNet encoder copy, hint block, zero convs."""
    depths = [transformer_depth] * len(channel_mult) if isinstance(transformer_depth, int) else list(transformer_depth)
    middle = depths[-1] if middle_depth is None else middle_depth
    layout: Layout = {}
    emb = model_channels * 4
    _linear(layout, f"{prefix}time_embed.0", emb, model_channels, dtype)
    _linear(layout, f"{prefix}time_embed.2", emb, emb, dtype)
    if adm_in_channels is not None:
        _linear(layout, f"{prefix}label_emb.0.0", emb, adm_in_channels, dtype)
        _linear(layout, f"{prefix}label_emb.0.2", emb, emb, dtype)
    encoder: Layout = {}
    ch, _skips = _ldm_encoder(encoder, prefix, in_channels=4, model_channels=model_channels,
                              channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                              attention_levels=attention_levels, transformer_depth=depths, middle_depth=middle,
                              context_dim=context_dim, use_linear=use_linear, adm_in_channels=None,
                              dtype=dtype, zero_convs=True)
    for name, decl in encoder.items():
        if name.startswith(f"{prefix}input_blocks."):
            layout[name] = decl
    for name, decl in encoder.items():
        if name.startswith(f"{prefix}zero_convs."):
            layout[name] = decl
    hint = [(16, hint_channels), (16, 16), (32, 16), (32, 32), (96, 32), (96, 96), (256, 96), (model_channels, 256)]
    for i, (out_c, in_c) in enumerate(hint):
        _conv(layout, f"{prefix}input_hint_block.{2 * i}", out_c, in_c, 3, dtype)
    for name, decl in encoder.items():
        if name.startswith(f"{prefix}middle_block."):
            layout[name] = decl
    _conv(layout, f"{prefix}middle_block_out.0", ch, ch, 1, dtype)
    return layout


# --- ldm VAE ------------------------------------------------------------------------------------------


def _vae_resblock(layout: Layout, p: str, ch_in: int, ch_out: int, dtype: str) -> None:
    _norm(layout, f"{p}.norm1", ch_in, dtype)
    _conv(layout, f"{p}.conv1", ch_out, ch_in, 3, dtype)
    _norm(layout, f"{p}.norm2", ch_out, dtype)
    _conv(layout, f"{p}.conv2", ch_out, ch_out, 3, dtype)
    if ch_in != ch_out:
        _conv(layout, f"{p}.nin_shortcut", ch_out, ch_in, 1, dtype)


def _vae_attn(layout: Layout, p: str, ch: int, dtype: str) -> None:
    _norm(layout, f"{p}.norm", ch, dtype)
    for n in ("q", "k", "v", "proj_out"):
        _conv(layout, f"{p}.{n}", ch, ch, 1, dtype)


def ldm_vae(*, z_channels: int = 4, ch: int = 128, ch_mult: Sequence[int] = (1, 2, 4, 4),
            num_res_blocks: int = 2, quant_conv: bool = True, dtype: str = "F32", prefix: str = "") -> Layout:
    """``AutoencoderKL`` (ldm/sgm naming). SD1/SD2/SDXL: 4 latent channels with quant convs;
    SD3/Flux: ``z_channels=16, quant_conv=False``."""
    layout: Layout = {}
    e = f"{prefix}encoder"
    _conv(layout, f"{e}.conv_in", ch, 3, 3, dtype)
    block_in = ch
    in_mult = (1, *ch_mult)
    for level, mult in enumerate(ch_mult):
        block_in = ch * in_mult[level]
        block_out = ch * mult
        for j in range(num_res_blocks):
            _vae_resblock(layout, f"{e}.down.{level}.block.{j}", block_in, block_out, dtype)
            block_in = block_out
        if level != len(ch_mult) - 1:
            _conv(layout, f"{e}.down.{level}.downsample.conv", block_in, block_in, 3, dtype)
    _vae_resblock(layout, f"{e}.mid.block_1", block_in, block_in, dtype)
    _vae_attn(layout, f"{e}.mid.attn_1", block_in, dtype)
    _vae_resblock(layout, f"{e}.mid.block_2", block_in, block_in, dtype)
    _norm(layout, f"{e}.norm_out", block_in, dtype)
    _conv(layout, f"{e}.conv_out", 2 * z_channels, block_in, 3, dtype)

    d = f"{prefix}decoder"
    block_in = ch * ch_mult[-1]
    _conv(layout, f"{d}.conv_in", block_in, z_channels, 3, dtype)
    _vae_resblock(layout, f"{d}.mid.block_1", block_in, block_in, dtype)
    _vae_attn(layout, f"{d}.mid.attn_1", block_in, dtype)
    _vae_resblock(layout, f"{d}.mid.block_2", block_in, block_in, dtype)
    ups: dict[int, Layout] = {}
    for level in reversed(range(len(ch_mult))):
        block_out = ch * ch_mult[level]
        part: Layout = {}
        for j in range(num_res_blocks + 1):
            _vae_resblock(part, f"{d}.up.{level}.block.{j}", block_in, block_out, dtype)
            block_in = block_out
        if level != 0:
            _conv(part, f"{d}.up.{level}.upsample.conv", block_in, block_in, 3, dtype)
        ups[level] = part
    for level in range(len(ch_mult)):
        layout.update(ups[level])
    _norm(layout, f"{d}.norm_out", ch, dtype)
    _conv(layout, f"{d}.conv_out", 3, ch, 3, dtype)
    if quant_conv:
        _conv(layout, f"{prefix}quant_conv", 2 * z_channels, 2 * z_channels, 1, dtype)
        _conv(layout, f"{prefix}post_quant_conv", z_channels, z_channels, 1, dtype)
    return layout


# --- text encoders -----------------------------------------------------------------------------------

#: (hidden width, layers, mlp width, heads) of the CLIP text towers in use.
CLIP_TEXT_CONFIGS = {
    "clip-l": (768, 12, 3072),
    "openclip-h": (1024, 24, 4096),
    "openclip-bigg": (1280, 32, 5120),
}


def hf_clip_text(*, width: int = 768, layers: int = 12, mlp: int = 3072, vocab: int = 49408,
                 positions: int = 77, projection: int | None = None, position_ids: bool = True,
                 final_layer_norm: bool = True, dtype: str = "F32", prefix: str = "") -> Layout:
    """transformers ``CLIPTextModel`` (``text_model.*``), ``projection`` adds the
    ``CLIPTextModelWithProjection`` ``text_projection.weight``. ``position_ids`` is the int64 buffer
    transformers < 4.31 saved."""
    layout: Layout = {}
    t = f"{prefix}text_model"
    _put(layout, f"{t}.embeddings.token_embedding.weight", (vocab, width), dtype)
    _put(layout, f"{t}.embeddings.position_embedding.weight", (positions, width), dtype)
    if position_ids:
        _put(layout, f"{t}.embeddings.position_ids", (1, positions), "I64")
    for i in range(layers):
        b = f"{t}.encoder.layers.{i}"
        for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
            _linear(layout, f"{b}.self_attn.{n}", width, width, dtype)
        _norm(layout, f"{b}.layer_norm1", width, dtype)
        _linear(layout, f"{b}.mlp.fc1", mlp, width, dtype)
        _linear(layout, f"{b}.mlp.fc2", width, mlp, dtype)
        _norm(layout, f"{b}.layer_norm2", width, dtype)
    if final_layer_norm:
        _norm(layout, f"{t}.final_layer_norm", width, dtype)
    if projection is not None:
        _put(layout, f"{prefix}text_projection.weight", (projection, width), dtype)
    return layout


def open_clip_text(*, width: int = 1024, layers: int = 24, mlp: int | None = None, projection: int | None = None,
                   vocab: int = 49408, positions: int = 77, dtype: str = "F32", prefix: str = "") -> Layout:
    """The open_clip text tower as SD2/SDXL checkpoints store it (visual tower removed)."""
    mlp = mlp or 4 * width
    projection = projection or width
    layout: Layout = {}
    _put(layout, f"{prefix}positional_embedding", (positions, width), dtype)
    _put(layout, f"{prefix}text_projection", (width, projection), dtype)
    _put(layout, f"{prefix}logit_scale", (), dtype)
    _put(layout, f"{prefix}token_embedding.weight", (vocab, width), dtype)
    for i in range(layers):
        b = f"{prefix}transformer.resblocks.{i}"
        _norm(layout, f"{b}.ln_1", width, dtype)
        _put(layout, f"{b}.attn.in_proj_weight", (3 * width, width), dtype)
        _put(layout, f"{b}.attn.in_proj_bias", (3 * width,), dtype)
        _linear(layout, f"{b}.attn.out_proj", width, width, dtype)
        _norm(layout, f"{b}.ln_2", width, dtype)
        _linear(layout, f"{b}.mlp.c_fc", mlp, width, dtype)
        _linear(layout, f"{b}.mlp.c_proj", width, mlp, dtype)
    _norm(layout, f"{prefix}ln_final", width, dtype)
    return layout


def t5_encoder(*, d_model: int = 4096, d_ff: int = 10240, layers: int = 24, heads: int = 64, d_kv: int = 64,
               vocab: int = 32128, relative_buckets: int = 32, embed_tokens: bool = False,
               dtype: str = "F16", prefix: str = "") -> Layout:
    """transformers ``T5EncoderModel`` v1.1 (gated GELU), T5-XXL by default; ``shared.weight`` holds
    the embeddings (``encoder.embed_tokens.weight`` is its tied alias, left out by safe writers)."""
    inner = heads * d_kv
    layout: Layout = {}
    _put(layout, f"{prefix}shared.weight", (vocab, d_model), dtype)
    if embed_tokens:
        _put(layout, f"{prefix}encoder.embed_tokens.weight", (vocab, d_model), dtype)
    for i in range(layers):
        b = f"{prefix}encoder.block.{i}.layer"
        for n in ("q", "k", "v"):
            _put(layout, f"{b}.0.SelfAttention.{n}.weight", (inner, d_model), dtype)
        _put(layout, f"{b}.0.SelfAttention.o.weight", (d_model, inner), dtype)
        if i == 0:
            _put(layout, f"{b}.0.SelfAttention.relative_attention_bias.weight", (relative_buckets, heads), dtype)
        _put(layout, f"{b}.0.layer_norm.weight", (d_model,), dtype)
        _put(layout, f"{b}.1.DenseReluDense.wi_0.weight", (d_ff, d_model), dtype)
        _put(layout, f"{b}.1.DenseReluDense.wi_1.weight", (d_ff, d_model), dtype)
        _put(layout, f"{b}.1.DenseReluDense.wo.weight", (d_model, d_ff), dtype)
        _put(layout, f"{b}.1.layer_norm.weight", (d_model,), dtype)
    _put(layout, f"{prefix}encoder.final_layer_norm.weight", (d_model,), dtype)
    return layout


# --- schedule buffers -------------------------------------------------------------------------------

LDM_SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)


def ldm_schedule(dtype: str = "F32") -> Layout:
    """The 12 ``[1000]`` noise-schedule buffers ``DDPM.register_schedule`` keeps in SD1/SD2 files."""
    return {name: TensorDecl((1000,), dtype) for name in LDM_SCHEDULE_BUFFERS}


# --- full single-file checkpoints (generated) ----------------------------------------------------------


def sdxl_refiner_checkpoint(dtype: str = "F16") -> Layout:
    """``sd_xl_refiner_1.0.safetensors``: refiner UNet, the bigG text encoder alone as
    ``conditioner.embedders.0``, the SDXL VAE and the denoiser's sigma table."""
    layout = ldm_unet(dtype=dtype, **UNET_CONFIGS["sdxl-refiner"])
    layout.update(ldm_vae(dtype=dtype, prefix="first_stage_model."))
    layout.update(open_clip_text(width=1280, layers=32, mlp=5120, projection=1280, dtype=dtype,
                                 prefix="conditioner.embedders.0.model."))
    layout["denoiser.sigmas"] = TensorDecl((1000,), dtype)
    return layout


# --- SD3 / SD3.5 MMDiT ----------------------------------------------------------------------------------

#: depth (joint blocks), hidden = 64 * depth, qk RMS norm, pos_embed_max_size, MMDiT-X dual-attention blocks
MMDIT_CONFIGS = {
    "sd3-medium": {"depth": 24, "qk_norm": False, "pos_embed_max": 192, "x_attn2_blocks": 0},
    "sd3.5-large": {"depth": 38, "qk_norm": True, "pos_embed_max": 192, "x_attn2_blocks": 0},
    "sd3.5-medium": {"depth": 24, "qk_norm": True, "pos_embed_max": 384, "x_attn2_blocks": 13},
}


def mmdit(*, depth: int = 24, qk_norm: bool = False, pos_embed_max: int = 192, x_attn2_blocks: int = 0,
          in_channels: int = 16, patch: int = 2, context_in: int = 4096, pooled_in: int = 2048,
          dtype: str = "F16", prefix: str = "model.diffusion_model.") -> Layout:
    """SD3 MMDiT (``sd3_medium.safetensors``) - hidden size 64 x depth, head dim 64."""
    hidden = 64 * depth
    head = 64
    layout: Layout = {}
    p = prefix
    _put(layout, f"{p}pos_embed", (1, pos_embed_max * pos_embed_max, hidden), dtype)
    _conv(layout, f"{p}x_embedder.proj", hidden, in_channels, patch, dtype)
    _linear(layout, f"{p}t_embedder.mlp.0", hidden, 256, dtype)
    _linear(layout, f"{p}t_embedder.mlp.2", hidden, hidden, dtype)
    _linear(layout, f"{p}y_embedder.mlp.0", hidden, pooled_in, dtype)
    _linear(layout, f"{p}y_embedder.mlp.2", hidden, hidden, dtype)
    _linear(layout, f"{p}context_embedder", hidden, context_in, dtype)
    for i in range(depth):
        last = i == depth - 1
        for side in ("context_block", "x_block"):
            b = f"{p}joint_blocks.{i}.{side}"
            pre_only = side == "context_block" and last
            dual = side == "x_block" and i < x_attn2_blocks
            chunks = 2 if pre_only else (9 if dual else 6)
            _linear(layout, f"{b}.adaLN_modulation.1", chunks * hidden, hidden, dtype)
            _linear(layout, f"{b}.attn.qkv", 3 * hidden, hidden, dtype)
            if qk_norm:
                _put(layout, f"{b}.attn.ln_q.weight", (head,), dtype)
                _put(layout, f"{b}.attn.ln_k.weight", (head,), dtype)
            if not pre_only:
                _linear(layout, f"{b}.attn.proj", hidden, hidden, dtype)
            if dual:
                _linear(layout, f"{b}.attn2.qkv", 3 * hidden, hidden, dtype)
                if qk_norm:
                    _put(layout, f"{b}.attn2.ln_q.weight", (head,), dtype)
                    _put(layout, f"{b}.attn2.ln_k.weight", (head,), dtype)
                _linear(layout, f"{b}.attn2.proj", hidden, hidden, dtype)
            if not pre_only:
                _linear(layout, f"{b}.mlp.fc1", 4 * hidden, hidden, dtype)
                _linear(layout, f"{b}.mlp.fc2", hidden, 4 * hidden, dtype)
    _linear(layout, f"{p}final_layer.linear", patch * patch * in_channels, hidden, dtype)
    _linear(layout, f"{p}final_layer.adaLN_modulation.1", 2 * hidden, hidden, dtype)
    return layout


def sd3_checkpoint(model: str = "sd3-medium", *, clips: bool = False, t5: bool = False,
                   dtype: str = "F16") -> Layout:
    """SD3 single file: MMDiT + 16-channel VAE (``first_stage_model.*``, no quant convs), and
    with ``clips``/``t5`` the ``text_encoders.{clip_l,clip_g,t5xxl}.transformer.*`` towers."""
    layout = mmdit(dtype=dtype, **MMDIT_CONFIGS[model])
    layout.update(ldm_vae(z_channels=16, quant_conv=False, dtype=dtype, prefix="first_stage_model."))
    if clips:
        layout.update(hf_clip_text(width=1280, layers=32, mlp=5120, projection=1280, position_ids=False,
                                   dtype=dtype, prefix="text_encoders.clip_g.transformer."))
        layout.update(hf_clip_text(width=768, layers=12, mlp=3072, projection=768, position_ids=False,
                                   dtype=dtype, prefix="text_encoders.clip_l.transformer."))
    if t5:
        layout.update(t5_encoder(dtype=dtype, prefix="text_encoders.t5xxl.transformer."))
    return layout


# --- Flux.1 -------------------------------------------------------------------------------------------


def flux(*, guidance: bool = True, depth: int = 19, depth_single: int = 38, hidden: int = 3072,
         heads: int = 24, mlp_ratio: float = 4.0, in_channels: int = 64, context_in: int = 4096,
         vec_in: int = 768, dtype: str = "BF16", prefix: str = "") -> Layout:
    """Black Forest Labs' Flux.1 (``flux1-dev.safetensors`` with ``guidance_in``; schnell without)."""
    head = hidden // heads
    mlp = int(hidden * mlp_ratio)
    layout: Layout = {}
    p = prefix
    _linear(layout, f"{p}img_in", hidden, in_channels, dtype)
    _linear(layout, f"{p}time_in.in_layer", hidden, 256, dtype)
    _linear(layout, f"{p}time_in.out_layer", hidden, hidden, dtype)
    _linear(layout, f"{p}vector_in.in_layer", hidden, vec_in, dtype)
    _linear(layout, f"{p}vector_in.out_layer", hidden, hidden, dtype)
    if guidance:
        _linear(layout, f"{p}guidance_in.in_layer", hidden, 256, dtype)
        _linear(layout, f"{p}guidance_in.out_layer", hidden, hidden, dtype)
    _linear(layout, f"{p}txt_in", hidden, context_in, dtype)
    for i in range(depth):
        for side in ("img", "txt"):
            b = f"{p}double_blocks.{i}.{side}"
            _linear(layout, f"{b}_mod.lin", 6 * hidden, hidden, dtype)
            _linear(layout, f"{b}_attn.qkv", 3 * hidden, hidden, dtype)
            _put(layout, f"{b}_attn.norm.query_norm.scale", (head,), dtype)
            _put(layout, f"{b}_attn.norm.key_norm.scale", (head,), dtype)
            _linear(layout, f"{b}_attn.proj", hidden, hidden, dtype)
            _linear(layout, f"{b}_mlp.0", mlp, hidden, dtype)
            _linear(layout, f"{b}_mlp.2", hidden, mlp, dtype)
    for i in range(depth_single):
        b = f"{p}single_blocks.{i}"
        _linear(layout, f"{b}.linear1", 3 * hidden + mlp, hidden, dtype)
        _linear(layout, f"{b}.linear2", hidden, hidden + mlp, dtype)
        _put(layout, f"{b}.norm.query_norm.scale", (head,), dtype)
        _put(layout, f"{b}.norm.key_norm.scale", (head,), dtype)
        _linear(layout, f"{b}.modulation.lin", 3 * hidden, hidden, dtype)
    _linear(layout, f"{p}final_layer.linear", in_channels, hidden, dtype)
    _linear(layout, f"{p}final_layer.adaLN_modulation.1", 2 * hidden, hidden, dtype)
    return layout


# --- LoRA flavours ---------------------------------------------------------------------------------------


def kohya_module_name(prefix: str, module_path: str) -> str:
    """kohya's LoRA module name: ``lora_unet_`` + the module path with dots as underscores."""
    return f"{prefix}_{module_path.replace('.', '_')}"


def lora_kohya(modules: dict[str, tuple[tuple[int, ...], tuple[int, ...]]], *, rank: int = 4,
               dtype: str = "F16") -> Layout:
    """``<module>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` for each kohya module name.

    ``modules`` maps the kohya name to the shapes ``(down, up)`` of a rank-1 stand-in: ``down`` is
    ``(in,)`` for a Linear or ``(in, k, k)`` for a Conv2d, ``up`` is ``(out,)`` (conv: ``(out, 1, 1)``).
    """
    layout: Layout = {}
    for name, (down, up) in modules.items():
        in_f, *kernel = down
        out_f, *up_kernel = up
        _put(layout, f"{name}.alpha", (), dtype)
        _put(layout, f"{name}.lora_down.weight", (rank, in_f, *kernel), dtype)
        _put(layout, f"{name}.lora_up.weight", (out_f, rank, *up_kernel), dtype)
    return layout


def lora_loha(modules: dict[str, tuple[int, int]], *, rank: int = 4, dtype: str = "F16") -> Layout:
    """LyCORIS LoHa on Linear modules: ``hada_w1_a [out, r]``, ``hada_w1_b [r, in]``, same for w2, alpha."""
    layout: Layout = {}
    for name, (out_f, in_f) in modules.items():
        _put(layout, f"{name}.alpha", (), dtype)
        _put(layout, f"{name}.hada_w1_a", (out_f, rank), dtype)
        _put(layout, f"{name}.hada_w1_b", (rank, in_f), dtype)
        _put(layout, f"{name}.hada_w2_a", (out_f, rank), dtype)
        _put(layout, f"{name}.hada_w2_b", (rank, in_f), dtype)
    return layout


def _lokr_factor(dim: int, factor: int = 8) -> tuple[int, int]:
    """LyCORIS' factorization: the split (m, n) of ``dim`` with m <= factor, closest to sqrt."""
    if factor > 0 and dim % factor == 0:
        return factor, dim // factor
    m = max(d for d in range(1, int(math.isqrt(dim)) + 1) if dim % d == 0)
    return m, dim // m


def lora_lokr(modules: dict[str, tuple[int, int]], *, factor: int = 8, dtype: str = "F16") -> Layout:
    """LyCORIS LoKr on Linear modules (full-rank w2): ``lokr_w1 [a, b]``, ``lokr_w2 [out/a, in/b]``."""
    layout: Layout = {}
    for name, (out_f, in_f) in modules.items():
        a, out_rest = _lokr_factor(out_f, factor)
        b, in_rest = _lokr_factor(in_f, factor)
        _put(layout, f"{name}.alpha", (), dtype)
        _put(layout, f"{name}.lokr_w1", (a, b), dtype)
        _put(layout, f"{name}.lokr_w2", (out_rest, in_rest), dtype)
    return layout


def lora_peft(modules: dict[str, tuple[int, int]], *, rank: int = 4, dtype: str = "F32") -> Layout:
    """peft / diffusers >= 0.27 ``save_lora_weights``: ``<module>.lora_A.weight [r, in]``,
    ``<module>.lora_B.weight [out, r]`` (module names carry ``unet.``/``transformer.``/``text_encoder.``)."""
    layout: Layout = {}
    for name, (out_f, in_f) in modules.items():
        _put(layout, f"{name}.lora_A.weight", (rank, in_f), dtype)
        _put(layout, f"{name}.lora_B.weight", (out_f, rank), dtype)
    return layout


def lora_diffusers_attn_procs(attentions: dict[str, tuple[int, int]], *, rank: int = 4,
                              dtype: str = "F32") -> Layout:
    """diffusers < 0.21 ``LoRAAttnProcessor`` weights (``pytorch_lora_weights.bin``):
    ``<attn>.processor.to_{q,k,v,out}_lora.{down,up}.weight``; ``attentions`` maps the attention
    module path to (hidden size, cross-attention dim)."""
    layout: Layout = {}
    for path, (hidden, cross) in attentions.items():
        for proj, in_f in (("to_q", hidden), ("to_k", cross), ("to_v", cross), ("to_out", hidden)):
            _put(layout, f"{path}.processor.{proj}_lora.down.weight", (rank, in_f), dtype)
            _put(layout, f"{path}.processor.{proj}_lora.up.weight", (hidden, rank), dtype)
    return layout


def kohya_text_encoder_modules(te_prefix: str, width: int, mlp: int, layers: int
                               ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """kohya module names of a transformers CLIP text encoder (``lora_te_``/``lora_te1_``/``lora_te2_``)."""
    modules: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for i in range(layers):
        base = f"text_model.encoder.layers.{i}"
        for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
            modules[kohya_module_name(te_prefix, f"{base}.self_attn.{n}")] = ((width,), (width,))
        modules[kohya_module_name(te_prefix, f"{base}.mlp.fc1")] = ((width,), (mlp,))
        modules[kohya_module_name(te_prefix, f"{base}.mlp.fc2")] = ((mlp,), (width,))
    return modules


def kohya_unet_modules_from_ldm(unet: Layout, prefix: str = "model.diffusion_model.",
                                conv: bool = False) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """kohya SDXL LoRA module names (sd-scripts' SDXL U-Net keeps the ldm names): every Linear and
    1x1 conv inside the SpatialTransformers, ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``.
    ``conv`` adds the 3x3 ResBlock convs (LoCon / ``conv_dim``)."""
    modules: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for name, decl in unet.items():
        if not name.startswith(prefix) or not name.endswith(".weight"):
            continue
        module = name[len(prefix):-len(".weight")]
        in_transformer = ".transformer_blocks." in module or module.endswith((".proj_in", ".proj_out"))
        is_norm = any(part.startswith("norm") for part in module.split(".")[-1:])
        if in_transformer and not is_norm:
            if len(decl.shape) == 2:
                modules[kohya_module_name("lora_unet", module)] = ((decl.shape[1],), (decl.shape[0],))
            elif len(decl.shape) == 4:
                modules[kohya_module_name("lora_unet", module)] = ((decl.shape[1], 1, 1), (decl.shape[0], 1, 1))
        elif conv and len(decl.shape) == 4 and decl.shape[2] == 3 and (
                ".in_layers.2" in name or ".out_layers.3" in name):
            k = decl.shape[2]
            modules[kohya_module_name("lora_unet", module)] = ((decl.shape[1], k, k), (decl.shape[0], 1, 1))
    return modules


# --- textual inversion -----------------------------------------------------------------------------------


def ti_a1111_pt(vectors: int = 2, width: int = 768, dtype: str = "F32") -> Layout:
    """A1111 ``.pt`` embedding, flattened: ``string_to_param.*``."""
    return {"string_to_param.*": TensorDecl((vectors, width), dtype)}


def ti_a1111_safetensors(vectors: int = 2, width: int = 768, dtype: str = "F32") -> Layout:
    """A1111 ``.safetensors`` embedding: ``emb_params``."""
    return {"emb_params": TensorDecl((vectors, width), dtype)}


def ti_sdxl(vectors: int = 2, dtype: str = "F32") -> Layout:
    """SDXL embedding pair: ``clip_l [n, 768]`` and ``clip_g [n, 1280]``."""
    return {"clip_g": TensorDecl((vectors, 1280), dtype), "clip_l": TensorDecl((vectors, 768), dtype)}


def ti_diffusers(token: str = "<tiny-concept>", width: int = 768, dtype: str = "F32") -> Layout:
    """diffusers ``learned_embeds.safetensors``: the placeholder token -> ``[1, width]``."""
    return {token: TensorDecl((1, width), dtype)}


# --- IP-Adapter / T2I-Adapter --------------------------------------------------------------------------


def ip_adapter(cross_attention: Sequence[tuple[int, int]], *, image_embed: int = 1024, tokens: int = 4,
               cross_dim: int = 768, dtype: str = "F16") -> Layout:
    """``ip-adapter_sd15.bin``/``.safetensors``: ``image_proj.{proj,norm}`` and, for each
    cross-attention processor (its index among all processors, its hidden size),
    ``ip_adapter.<index>.to_{k,v}_ip.weight [hidden, cross_dim]``."""
    layout: Layout = {}
    _linear(layout, "image_proj.proj", tokens * cross_dim, image_embed, dtype)
    _norm(layout, "image_proj.norm", cross_dim, dtype)
    for index, hidden in cross_attention:
        _put(layout, f"ip_adapter.{index}.to_k_ip.weight", (hidden, cross_dim), dtype)
        _put(layout, f"ip_adapter.{index}.to_v_ip.weight", (hidden, cross_dim), dtype)
    return layout


def t2i_adapter_original(*, cin: int = 64 * 3, channels: Sequence[int] = (320, 640, 1280, 1280),
                         num_res_blocks: int = 2, dtype: str = "F32") -> Layout:
    """TencentARC ``t2iadapter_*_sd14v1.pth`` (full adapter): ``conv_in``, ``body.N.block{1,2}``
    and ``body.N.in_conv`` where the channel count changes."""
    layout: Layout = {}
    _conv(layout, "conv_in", channels[0], cin, 3, dtype)
    index = 0
    previous = channels[0]
    for ch in channels:
        for _ in range(num_res_blocks):
            if previous != ch:
                _conv(layout, f"body.{index}.in_conv", ch, previous, 1, dtype)
            _conv(layout, f"body.{index}.block1", ch, ch, 3, dtype)
            _conv(layout, f"body.{index}.block2", ch, ch, 1, dtype)
            previous = ch
            index += 1
    ordered: Layout = {"conv_in.weight": layout.pop("conv_in.weight"), "conv_in.bias": layout.pop("conv_in.bias")}
    body = sorted(layout.items(), key=lambda item: int(item[0].split(".")[1]))
    ordered.update(body)
    return ordered


# --- SD2 depth: the MiDaS DPT-Hybrid depth model stored beside the UNet -------------------------------


def midas_dpt_hybrid(dtype: str = "F32", prefix: str = "depth_model.model.", *, width: int = 768, layers: int = 12,
                     mlp: int | None = None, tokens: int = 577, stem: int = 64,
                     stages: Sequence[tuple[int, int]] = ((3, 256), (4, 512), (9, 1024)),
                     features: Sequence[int] = (256, 512, 768, 768), fusion: int = 256,
                     classifier: int | None = None) -> Layout:
    """The MiDaS DPT-Hybrid (ViT-B/16 + ResNet-50 stem) that ``512-depth-ema.ckpt`` carries as
    ``depth_model.model.*``: timm ``vit_base_resnet50_384`` under ``pretrained.model``, the
    ``act_postprocess{3,4}`` readouts (the hybrid takes stages 1-2 from the ResNet) and the
    ``scratch`` refinement/fusion head. Defaults are the released sizes; ``stages`` are (blocks,
    output channels) of the ResNet stages, ``tokens`` the patch grid + 1, ``classifier`` adds timm's
    ``head`` with that many classes (absent by default)."""
    layout: Layout = {}
    p = f"{prefix}pretrained.model"
    mlp = 4 * width if mlp is None else mlp
    _put(layout, f"{p}.cls_token", (1, 1, width), dtype)
    _put(layout, f"{p}.pos_embed", (1, tokens, width), dtype)
    backbone = f"{p}.patch_embed.backbone"
    _put(layout, f"{backbone}.stem.conv.weight", (stem, 3, 7, 7), dtype)
    _norm(layout, f"{backbone}.stem.norm", stem, dtype)
    in_c = stem
    for stage, (blocks, out_c) in enumerate(stages):
        mid = out_c // 4
        for b in range(blocks):
            base = f"{backbone}.stages.{stage}.blocks.{b}"
            if b == 0:
                _put(layout, f"{base}.downsample.conv.weight", (out_c, in_c, 1, 1), dtype)
                _norm(layout, f"{base}.downsample.norm", out_c, dtype)
            _put(layout, f"{base}.conv1.weight", (mid, in_c if b == 0 else out_c, 1, 1), dtype)
            _norm(layout, f"{base}.norm1", mid, dtype)
            _put(layout, f"{base}.conv2.weight", (mid, mid, 3, 3), dtype)
            _norm(layout, f"{base}.norm2", mid, dtype)
            _put(layout, f"{base}.conv3.weight", (out_c, mid, 1, 1), dtype)
            _norm(layout, f"{base}.norm3", out_c, dtype)
        in_c = out_c
    _conv(layout, f"{p}.patch_embed.proj", width, in_c, 1, dtype)
    for i in range(layers):
        b = f"{p}.blocks.{i}"
        _norm(layout, f"{b}.norm1", width, dtype)
        _linear(layout, f"{b}.attn.qkv", 3 * width, width, dtype)
        _linear(layout, f"{b}.attn.proj", width, width, dtype)
        _norm(layout, f"{b}.norm2", width, dtype)
        _linear(layout, f"{b}.mlp.fc1", mlp, width, dtype)
        _linear(layout, f"{b}.mlp.fc2", width, mlp, dtype)
    _norm(layout, f"{p}.norm", width, dtype)
    if classifier:
        _linear(layout, f"{p}.head", classifier, width, dtype)
    for i in (3, 4):
        _linear(layout, f"{prefix}pretrained.act_postprocess{i}.0.project.0", width, 2 * width, dtype)
    _conv(layout, f"{prefix}pretrained.act_postprocess3.3", features[2], width, 1, dtype)
    _conv(layout, f"{prefix}pretrained.act_postprocess4.3", features[3], width, 1, dtype)
    _conv(layout, f"{prefix}pretrained.act_postprocess4.4", features[3], features[3], 3, dtype)
    s = f"{prefix}scratch"
    for i, c in enumerate(features, start=1):
        _put(layout, f"{s}.layer{i}_rn.weight", (fusion, c, 3, 3), dtype)
    for i in range(1, len(features) + 1):
        r = f"{s}.refinenet{i}"
        _conv(layout, f"{r}.out_conv", fusion, fusion, 1, dtype)
        for unit in (1, 2):
            for conv in (1, 2):
                _conv(layout, f"{r}.resConfUnit{unit}.conv{conv}", fusion, fusion, 3, dtype)
    _conv(layout, f"{s}.output_conv.0", fusion // 2, fusion, 3, dtype)
    _conv(layout, f"{s}.output_conv.2", 32, fusion // 2, 3, dtype)
    _conv(layout, f"{s}.output_conv.4", 1, 32, 1, dtype)
    return layout
