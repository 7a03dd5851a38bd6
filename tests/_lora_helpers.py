"""Tiny kohya LoRAs for the tiny SD1 pipeline of tests/_tiny_diffusers.py, written by the safetensors
library (as sd-scripts writes them), with the module names read off the real diffusers models."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path


def _modules(model, prefix: str, unet: bool):
    """(kohya name, weight shape) of every Linear / 1x1 conv that sd-scripts adapts by default."""
    out = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if unet and ".attentions." not in name:
            continue
        if not unet and (".layers." not in name or kind != "Linear"):
            continue
        if kind == "Linear" or (kind == "Conv2d" and tuple(module.weight.shape[2:]) == (1, 1)):
            path = name if unet else ("text_model." + name if not name.startswith("text_model.") else name)
            out.append((prefix + path.replace(".", "_"), tuple(module.weight.shape)))
    return out


def kohya_state_dict(pipe, *, ranks=(2, 3), alphas=(1.0, 0.5, 2.0), dtype="float16", dora: bool = False,
                     text_encoder: bool = True, seed: int = 1, alpha_dtype=None):
    """A kohya LoRA for ``pipe`` with ranks and alphas cycling over modules (mixed on purpose)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    adt = getattr(torch, alpha_dtype) if alpha_dtype else dt
    mods = _modules(pipe.unet, "lora_unet_", True)
    if text_encoder:
        mods += _modules(pipe.text_encoder, "lora_te_", False)
    sd = {}
    for i, (name, shape) in enumerate(mods):
        r = ranks[i % len(ranks)]
        kernel = shape[2:]
        sd[f"{name}.lora_down.weight"] = (torch.randn(r, shape[1], *kernel, generator=g) * 0.3).to(dt)
        sd[f"{name}.lora_up.weight"] = (torch.randn(shape[0], r, *kernel, generator=g) * 0.3).to(dt)
        sd[f"{name}.alpha"] = torch.tensor(alphas[i % len(alphas)]).to(adt)
        if dora:
            sd[f"{name}.dora_scale"] = (torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=g) + 0.5).to(dt)
    return sd


def save_kohya(pipe, path: Path, *, metadata=None, **kwargs) -> Path:
    from safetensors.torch import save_file

    save_file(kohya_state_dict(pipe, **kwargs), str(path), metadata=metadata)
    return path


@functools.cache
def tiny_pipeline_folder() -> Path:
    """The tiny SD1 pipeline saved once (its config.json files are the LoRA conversion's --config)."""
    import sys
    import warnings

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny_diffusers import build_pipeline

    folder = Path(tempfile.mkdtemp(prefix="assetkit-lora-pipe-")) / "pipe"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_pipeline().save_pretrained(folder)
    return folder


def load_pipeline(folder: Path):
    import warnings

    from diffusers import StableDiffusionPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
