"""Tiny adapters that fit (or deliberately do not fit) the tiny diffusers pipelines of
:mod:`.diffusers_models`: LoRAs in peft or kohya naming, ControlNets, VAEs with a chosen scaling
factor, a copy of a pipeline with a few NaN weights and one whose VAE overflows in fp16. For the pipeline tests and ``assetkit demo``.

Shapes are read from the base's weights with the ``safetensors`` library (not assetkit's reader);
torch and diffusers are imported inside the functions only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

_UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                 "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
_TE_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")


def _weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "np") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open has no iteration protocol
                shapes[key] = tuple(fh.get_slice(key).get_shape())
    return shapes


def save_tiny_lora(base: str | Path, dest: str | Path, *, rank: int = 4, seed: int = 0, naming: str = "peft",
                   text_encoder: bool = False, strength: float = 0.5) -> Path:
    """A LoRA (one ``.safetensors`` file) for the UNet attention projections of the diffusers
    pipeline folder ``base`` (and its first text encoder with ``text_encoder``). ``naming``:
    ``peft`` (``unet.<module>.lora_A.weight``, what diffusers saves) or ``kohya``
    (``lora_unet_<module>.lora_down.weight`` + ``.alpha``). Both factors are random (seeded), so
    the LoRA changes the output."""
    from safetensors.numpy import save_file

    base, dest = Path(base), Path(dest)
    rng = np.random.default_rng(seed)
    parts = [("unet", _UNET_TARGETS, "lora_unet_")]
    if text_encoder:
        parts.append(("text_encoder", _TE_TARGETS, "lora_te_"))
    tensors: dict[str, np.ndarray] = {}
    for component, targets, kohya_prefix in parts:
        for key, shape in sorted(_weight_shapes(base / component).items()):
            module = key.removesuffix(".weight")
            if not key.endswith(".weight") or len(shape) != 2 or not module.endswith(targets):
                continue
            out_f, in_f = shape
            down = (rng.standard_normal((rank, in_f)) * strength / np.sqrt(in_f)).astype(np.float32)
            up = (rng.standard_normal((out_f, rank)) * strength / np.sqrt(rank)).astype(np.float32)
            if naming == "peft":
                tensors[f"{component}.{module}.lora_A.weight"] = down
                tensors[f"{component}.{module}.lora_B.weight"] = up
            elif naming == "kohya":
                name = kohya_prefix + module.replace(".", "_")
                tensors[f"{name}.lora_down.weight"] = down
                tensors[f"{name}.lora_up.weight"] = up
                tensors[f"{name}.alpha"] = np.array(float(rank), dtype=np.float32)
            else:
                raise ValueError(f"unknown LoRA naming {naming!r} (peft, kohya)")
    if not tensors:
        raise ValueError(f"{base}: no attention projections found to adapt")
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest), metadata={"format": "pt"})
    return dest


def save_tiny_controlnet(base: str | Path, dest: str | Path, *, seed: int = 0, strength: float = 0.5) -> Path:
    """A ControlNet folder made from the UNet of ``base`` (diffusers' ``ControlNetModel.from_unet``),
    with its zero convolutions filled with seeded noise so that it changes the output."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from .diffusers_models import quiet_libraries

    quiet_libraries()
    unet = UNet2DConditionModel.from_pretrained(str(Path(base) / "unet"))
    vae_config = json.loads((Path(base) / "vae" / "config.json").read_text(encoding="utf-8"))
    # one conditioning-embedding level per VAE level: the hint is brought down to the latent size
    levels = (16, 32, 96, 256)[: len(vae_config["block_out_channels"])]
    controlnet = ControlNetModel.from_unet(unet, conditioning_channels=3, conditioning_embedding_out_channels=levels)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                param.copy_(torch.randn(param.shape, generator=generator) * strength / max(1, param[0].numel()) ** 0.5)
    controlnet.save_pretrained(str(dest))
    return Path(dest)


def save_tiny_vae_folder(dest: str | Path, *, scaling_factor: float = 0.18215, latent_channels: int = 4,
                         force_upcast: bool = True, seed: int = 0) -> Path:
    """A VAE component folder (``config.json`` + weights) with the given scaling factor."""
    from .diffusers_models import quiet_libraries, tiny_vae

    quiet_libraries()
    vae = tiny_vae(latent_channels=latent_channels, seed=seed)
    vae.register_to_config(scaling_factor=scaling_factor, force_upcast=force_upcast)
    vae.save_pretrained(str(dest))
    return Path(dest)


def copy_with_nan(base: str | Path, dest: str | Path, *, component: str = "unet", count: int = 3,
                  tensor_suffix: str = "conv_in.weight") -> Path:
    """A copy of pipeline folder ``base`` whose ``component`` weight ending in ``tensor_suffix``
    has ``count`` NaN values (the rest of the model untouched)."""
    from safetensors.numpy import load_file, save_file

    base, dest = Path(base), Path(dest)
    shutil.copytree(base, dest)
    for file in sorted((dest / component).glob("*.safetensors")):
        tensors = load_file(str(file))
        names = [k for k in tensors if k.endswith(tensor_suffix)]
        if names:
            array = tensors[names[0]].copy()
            array.reshape(-1)[:count] = np.nan
            tensors[names[0]] = array
            save_file(tensors, str(file), metadata={"format": "pt"})
            return dest
    raise ValueError(f"{base}/{component}: no tensor ending in {tensor_suffix}")


def copy_with_fp16_overflow(base: str | Path, dest: str | Path, *, force_upcast: bool | None = None,
                            gain: float = 3e4) -> Path:
    """A copy of pipeline folder ``base`` whose VAE decoder overflows in fp16 but not in fp32, as
    the released SDXL VAE does: ``decoder.conv_in.weight`` is multiplied by ``gain``, so the
    activations it feeds the residual stream pass fp16's 65504 (inf, then NaN in the next group
    norm) while fp32 normalises them back at ``conv_norm_out``. ``force_upcast`` sets that entry
    of ``vae/config.json`` (None: left as it is)."""
    from safetensors.numpy import load_file, save_file

    base, dest = Path(base), Path(dest)
    shutil.copytree(base, dest)
    for file in sorted((dest / "vae").glob("*.safetensors")):
        tensors = load_file(str(file))
        if "decoder.conv_in.weight" in tensors:
            tensors["decoder.conv_in.weight"] = tensors["decoder.conv_in.weight"] * np.float32(gain)
            save_file(tensors, str(file), metadata={"format": "pt"})
            break
    else:
        raise ValueError(f"{base}/vae: no decoder.conv_in.weight")
    if force_upcast is not None:
        config = dest / "vae" / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "force_upcast": force_upcast}, indent=2))
    return dest


def add_tiny_safety_checker(folder: str | Path, *, flag_everything: bool = False, seed: int = 0) -> Path:
    """Give pipeline folder ``folder`` a tiny ``StableDiffusionSafetyChecker`` (and its CLIP image
    processor), as the released SD 1.x folders have one. Its concept thresholds make it flag every
    image (``flag_everything``, what a broken checker does) or none."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    from .diffusers_models import quiet_libraries

    quiet_libraries()
    folder = Path(folder)
    torch.manual_seed(seed)
    config = CLIPConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                     "num_attention_heads": 4, "vocab_size": 1000},
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    checker = StableDiffusionSafetyChecker(config)
    threshold = -2.0 if flag_everything else 2.0  # cosine scores lie in [-1, 1]
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
    checker.save_pretrained(str(folder / "safety_checker"))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(folder / "feature_extractor"))
    index = json.loads((folder / "model_index.json").read_text())
    index |= {"safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
              "feature_extractor": ["transformers", "CLIPImageProcessor"], "requires_safety_checker": True}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
