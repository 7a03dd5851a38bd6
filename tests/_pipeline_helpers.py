"""Tiny pipelines and adapters for the pipeline tests, built once per session (a few seconds)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def assemble_and_smoke(spec_path: Path) -> tuple[Any, Any]:
    """(the assembled pipeline, the smoke result) of a spec file, on the CPU."""
    from assetkit.pipeline.assemble import assemble
    from assetkit.pipeline.smoke import smoke
    from assetkit.pipeline.sources import resolve_spec
    from assetkit.pipeline.spec import load_spec

    spec = load_spec(spec_path)
    assembled = assemble(spec, resolve_spec(spec), device="cpu")
    return assembled, smoke(assembled, spec)


def _set_config(path: Path, **values: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> path: sd1/sdxl pipeline folders, matching LoRAs (peft, kohya) and ControlNets, an
    SDXL-scaled VAE, a 16-channel VAE, an SD1 pipeline of other widths, a v-prediction SD1 copy and
    a copy with NaN weights."""
    from assetkit.factory.diffusers_models import save_tiny_sd1_pipeline, save_tiny_sdxl_pipeline
    from assetkit.factory.pipeline_assets import (
        copy_with_nan,
        save_tiny_controlnet,
        save_tiny_lora,
        save_tiny_vae_folder,
    )

    root = tmp_path_factory.mktemp("pipeline-assets")
    p = {name: root / name for name in ("sd1", "sdxl", "sd1_narrow", "lora_sd1.safetensors",
                                        "lora_sd1_kohya.safetensors", "lora_sdxl.safetensors",
                                        "lora_narrow.safetensors", "lora_zero.safetensors", "cn_sd1", "cn_sdxl",
                                        "vae_sdxl", "vae_16ch", "sd1_vpred", "sd1_nan")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_tiny_sd1_pipeline(p["sd1"])
        save_tiny_sdxl_pipeline(p["sdxl"])
        _set_config(p["sdxl"] / "vae" / "config.json", scaling_factor=0.13025)  # as the released SDXL VAE
        save_tiny_sd1_pipeline(p["sd1_narrow"], decisive_dims=False)
        save_tiny_lora(p["sd1"], p["lora_sd1.safetensors"], text_encoder=True)
        save_tiny_lora(p["sd1"], p["lora_sd1_kohya.safetensors"], naming="kohya", text_encoder=True)
        save_tiny_lora(p["sdxl"], p["lora_sdxl.safetensors"])
        save_tiny_lora(p["sd1_narrow"], p["lora_narrow.safetensors"])
        save_tiny_lora(p["sd1"], p["lora_zero.safetensors"], strength=0.0)
        save_tiny_controlnet(p["sd1"], p["cn_sd1"])
        save_tiny_controlnet(p["sdxl"], p["cn_sdxl"])
        save_tiny_vae_folder(p["vae_sdxl"], scaling_factor=0.13025)
        save_tiny_vae_folder(p["vae_16ch"], latent_channels=16)
        shutil.copytree(p["sd1"], p["sd1_vpred"])
        _set_config(p["sd1_vpred"] / "scheduler" / "scheduler_config.json", prediction_type="v_prediction")
        copy_with_nan(p["sd1"], p["sd1_nan"])
    return p


@pytest.fixture(scope="session")
def task_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> path for the IP-Adapter and task tests: an SD1 pipeline and its inpainting sibling
    (9-channel UNet), a CLIP image encoder (32-wide embeddings) and one 64 wide, an IP-Adapter for
    the SD1 UNet and one of cross-attention width 1024 (SD2's)."""
    from assetkit.factory.diffusers_models import save_tiny_sd1_pipeline
    from assetkit.factory.task_assets import (
        save_tiny_image_encoder,
        save_tiny_inpaint_pipeline,
        save_tiny_ip_adapter,
    )

    root = tmp_path_factory.mktemp("task-assets")
    p = {name: root / name for name in ("sd1", "inpaint", "encoder", "encoder_64", "ip_adapter.safetensors",
                                        "ip_adapter_1024.safetensors")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_tiny_sd1_pipeline(p["sd1"])
        save_tiny_inpaint_pipeline(p["inpaint"])
        save_tiny_image_encoder(p["encoder"])
        save_tiny_image_encoder(p["encoder_64"], projection_dim=64)
        save_tiny_ip_adapter(p["sd1"], p["ip_adapter.safetensors"])
        save_tiny_ip_adapter(p["sd1"], p["ip_adapter_1024.safetensors"], cross_attention_dim=1024)
    return p
