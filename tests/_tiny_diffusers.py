"""Tiny diffusers pipelines saved by diffusers itself, for the folder reader and validate tests.

Built once per test session (a few seconds: importing torch/diffusers dominates) and copied by
the tests that corrupt them. Nothing is downloaded: the tokenizer comes from a vocabulary
written here.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
import warnings
from pathlib import Path

from safetensors.numpy import load_file, save_file

# Tiny but real configurations: the same classes as Stable Diffusion 1.x.
UNET_CONFIG = dict(
    block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, cross_attention_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=2, sample_size=8,
)
VAE_CONFIG = dict(
    block_out_channels=(8,), layers_per_block=1, norm_num_groups=4, latent_channels=4, sample_size=8,
    down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
)
TEXT_CONFIG = dict(
    hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=1, vocab_size=64,
    max_position_embeddings=16, projection_dim=8, bos_token_id=0, eos_token_id=1, pad_token_id=1,
)
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def build_pipeline():
    """A StableDiffusionPipeline of tiny random models (fixed seed)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_tokenizer(), unet=unet, scheduler=DDIMScheduler(clip_sample=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_tokenizer():
    from transformers import CLIPTokenizer

    words = ["a</w>", "photo</w>", "of</w>", "cat</w>", "a", "p", "h", "o", "t", "c"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1} | {w: i for i, w in enumerate(words, start=2)}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))


def save_variants(base: Path) -> dict[str, Path]:
    """Save the same pipeline in the layouts the tests need; returns name -> folder.

    * ``plain``: safetensors, no variants;
    * ``fp16``: plain fp32 files plus a real fp16 variant of every model component;
    * ``only_fp16``: fp16 variant files only;
    * ``sharded``: safetensors with the UNet sharded (and a sharded fp16 variant);
    * ``bin``: ``.bin`` pickles (safe_serialization=False).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers' advice on casting a built model with .to()
        return _save_variants(base)


def _save_variants(base: Path) -> dict[str, Path]:
    import torch

    pipe = build_pipeline()
    folders = {name: base / name for name in ("plain", "fp16", "only_fp16", "sharded", "bin")}
    pipe.save_pretrained(folders["plain"])
    pipe.save_pretrained(folders["bin"], safe_serialization=False)
    pipe.save_pretrained(folders["sharded"], max_shard_size="20KB")
    pipe.save_pretrained(folders["fp16"])
    pipe.to(torch.float16)
    pipe.save_pretrained(folders["fp16"], variant="fp16")
    pipe.save_pretrained(folders["only_fp16"], variant="fp16")
    pipe.save_pretrained(folders["sharded"], variant="fp16", max_shard_size="20KB")
    return folders


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_safetensors(path: Path, drop: tuple[str, ...] = (), add: dict | None = None) -> None:
    """Rewrite a safetensors file without some tensors and/or with extra ones (numpy arrays)."""
    tensors = load_file(str(path))
    for name in drop:
        del tensors[name]
    tensors.update(add or {})
    save_file(tensors, str(path), metadata={"format": "pt"})


@functools.cache
def saved_pipelines() -> dict[str, Path]:
    """:func:`save_variants` once per test process, in a temporary folder removed at exit.

    Read-only for the tests: copy a folder (:func:`copy_folder`) before corrupting it.
    """
    base = Path(tempfile.mkdtemp(prefix="assetkit-tiny-diffusers-"))
    atexit.register(shutil.rmtree, base, True)
    return save_variants(base)
