"""Tiny diffusers pipelines and component folders, saved by diffusers itself (``save_pretrained``).

The models are real diffusers/transformers classes with tiny configurations; by default they keep
the dimensions that tell SD1 from SD2 (text-encoder width and cross-attention dim 768), so a
folder can be identified from its configs and weights just like a released one;
``decisive_dims=False`` shrinks those too. SDXL folders are identified by their pipeline class and
default to tiny widths (``decisive_dims=True`` gives the real 768/1280/2048/2816 widths).
The tokenizer is a CLIP BPE tokenizer built from a small vocabulary written here - nothing is
downloaded. Everything is seeded: the same call writes the same tensors.

torch, diffusers and transformers are imported inside the functions only.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

#: Tokens the tiny tokenizer merges (besides single bytes).
_MERGES = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "f</w>")]
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2/CLIP reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_tiny_clip_vocab(folder: str | Path) -> tuple[Path, Path]:
    """``vocab.json`` (every byte, alone and word-final, a few merges, the two specials) and
    ``merges.txt``. Returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in _MERGES] + list(_SPECIALS)
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in _MERGES) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def tiny_clip_tokenizer(pad_token: str = "<|endoftext|>") -> Any:
    """A ``CLIPTokenizer`` over the vocabulary of :func:`write_tiny_clip_vocab` (max length 77)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_path, _merges_path = write_tiny_clip_vocab(tmp)
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    return CLIPTokenizer(vocab=vocab, merges=list(_MERGES), model_max_length=77, pad_token=pad_token)


def _vocab_size() -> int:
    return 2 * 256 + len(_MERGES) + len(_SPECIALS)


def _text_config(width: int, projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig

    size = _vocab_size()
    return CLIPTextConfig(vocab_size=size, hidden_size=width, intermediate_size=37, num_hidden_layers=1,
                          num_attention_heads=4, max_position_embeddings=77, projection_dim=projection or width,
                          bos_token_id=size - 2, eos_token_id=size - 1, pad_token_id=size - 1,
                          hidden_act="quick_gelu")


def tiny_unet(kind: str = "sd1", *, decisive_dims: bool = True, seed: int = 0) -> Any:
    """A two-level ``UNet2DConditionModel``; ``kind`` "sd1" (768 context) or "sdxl" (2048, text_time)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    common = {"block_out_channels": (32, 64), "layers_per_block": 1, "sample_size": 16, "in_channels": 4,
              "out_channels": 4, "norm_num_groups": 32}
    if kind == "sdxl":
        return UNet2DConditionModel(
            **common, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, cross_attention_dim=2048 if decisive_dims else 64,
            addition_embed_type="text_time", addition_time_embed_dim=256 if decisive_dims else 8,
            projection_class_embeddings_input_dim=2816 if decisive_dims else 6 * 8 + 32)
    return UNet2DConditionModel(
        **common, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8,
        cross_attention_dim=768 if decisive_dims else 32)


def tiny_vae(*, latent_channels: int = 4, seed: int = 0) -> Any:
    """A two-level ``AutoencoderKL``."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=latent_channels, norm_num_groups=32, sample_size=32)


def tiny_text_encoder(width: int = 768, *, projection: bool = False, seed: int = 0) -> Any:
    """A one-layer ``CLIPTextModel`` (``CLIPTextModelWithProjection`` with ``projection``)."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = _text_config(width, width if projection else None)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _scheduler(sdxl: bool) -> Any:
    from diffusers import EulerDiscreteScheduler, PNDMScheduler

    kwargs = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "num_train_timesteps": 1000, "prediction_type": "epsilon"}
    if sdxl:
        return EulerDiscreteScheduler(**kwargs, timestep_spacing="leading", steps_offset=1)
    return PNDMScheduler(**kwargs, skip_prk_steps=True, steps_offset=1)


def tiny_sd1_pipeline(*, decisive_dims: bool = True, seed: int = 0) -> Any:
    """A ``StableDiffusionPipeline`` (no safety checker) of tiny components."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=tiny_vae(seed=seed), text_encoder=tiny_text_encoder(768 if decisive_dims else 32, seed=seed),
        tokenizer=tiny_clip_tokenizer(), unet=tiny_unet("sd1", decisive_dims=decisive_dims, seed=seed),
        scheduler=_scheduler(False), safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def tiny_sdxl_pipeline(*, decisive_dims: bool = False, seed: int = 0) -> Any:
    """A ``StableDiffusionXLPipeline`` of tiny components (CLIP-L 768 + bigG-wide 1280 encoders)."""
    from diffusers import StableDiffusionXLPipeline

    width_1, width_2 = (768, 1280) if decisive_dims else (32, 32)
    return StableDiffusionXLPipeline(
        vae=tiny_vae(seed=seed), text_encoder=tiny_text_encoder(width_1, seed=seed),
        text_encoder_2=tiny_text_encoder(width_2, projection=True, seed=seed + 1),
        tokenizer=tiny_clip_tokenizer(), tokenizer_2=tiny_clip_tokenizer(pad_token="!"),
        unet=tiny_unet("sdxl", decisive_dims=decisive_dims, seed=seed), scheduler=_scheduler(True))


def quiet_libraries() -> None:
    """Silence progress bars and import-time notices of diffusers/transformers/huggingface_hub."""
    import diffusers
    import huggingface_hub
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def _save(obj: Any, dest: Path, variant: str | None, safe_serialization: bool, max_shard_size: str | int | None) -> Path:
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    kwargs: dict[str, Any] = {"safe_serialization": safe_serialization}
    if variant:
        kwargs["variant"] = variant
        if variant == "fp16":
            import torch

            obj = obj.to(torch.float16)
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    obj.save_pretrained(str(dest), **kwargs)
    return dest


def save_tiny_sd1_pipeline(dest: str | Path, *, variant: str | None = None, safe_serialization: bool = True,
                           max_shard_size: str | int | None = None, decisive_dims: bool = True,
                           seed: int = 0) -> Path:
    """Write a tiny SD1 diffusers folder (``model_index.json`` + components). ``variant="fp16"``
    casts to float16 and names the weights ``*.fp16.safetensors``; ``max_shard_size`` shards them;
    ``safe_serialization=False`` writes ``.bin`` pickles."""
    quiet_libraries()
    pipe = tiny_sd1_pipeline(decisive_dims=decisive_dims, seed=seed)
    return _save(pipe, Path(dest), variant, safe_serialization, max_shard_size)


def save_tiny_sdxl_pipeline(dest: str | Path, *, variant: str | None = None, safe_serialization: bool = True,
                            max_shard_size: str | int | None = None, decisive_dims: bool = False,
                            seed: int = 0) -> Path:
    """Write a tiny SDXL diffusers folder (two text encoders and tokenizers). The pipeline class
    identifies SDXL, so by default the widths are tiny too (``decisive_dims=True``: the real
    768/1280/2048/2816 widths, about 60 MB)."""
    quiet_libraries()
    pipe = tiny_sdxl_pipeline(decisive_dims=decisive_dims, seed=seed)
    return _save(pipe, Path(dest), variant, safe_serialization, max_shard_size)


def save_tiny_component(kind: str, dest: str | Path, *, family: str = "sd1", variant: str | None = None,
                        safe_serialization: bool = True, max_shard_size: str | int | None = None,
                        decisive_dims: bool = True, seed: int = 0) -> Path:
    """Write one component folder (``config.json`` + weights): ``kind`` in unet, vae, text_encoder."""
    quiet_libraries()
    if kind == "unet":
        model = tiny_unet(family, decisive_dims=decisive_dims, seed=seed)
    elif kind == "vae":
        model = tiny_vae(seed=seed)
    elif kind == "text_encoder":
        model = tiny_text_encoder(768 if decisive_dims else 32, seed=seed)
    else:
        raise ValueError(f"unknown component kind {kind!r} (unet, vae, text_encoder)")
    return _save(model, Path(dest), variant, safe_serialization, max_shard_size)


def save_fixture_folder(fixture_id: str, dest: str | Path, *, seed: int = 0) -> Path:
    """The folder of a ``diffusers`` fixture of :data:`assetkit.factory.specs.FIXTURES`."""
    if fixture_id == "diffusers_sd15":
        return save_tiny_sd1_pipeline(dest, seed=seed)
    if fixture_id == "diffusers_sdxl":
        return save_tiny_sdxl_pipeline(dest, seed=seed)
    if fixture_id == "diffusers_unet_sd15":
        return save_tiny_component("unet", dest, seed=seed)
    if fixture_id == "diffusers_vae":
        return save_tiny_component("vae", dest, seed=seed)
    raise KeyError(f"{fixture_id!r} is not a diffusers folder fixture")
