"""The pipeline half of ``assetkit demo``: tiny real-layout assets (a real CLIP tokenizer from the
shipped BPE vocabulary), registered, one converted between layouts, a spec with a LoRA and a
ControlNet written, locked, checked and smoke-tested on CPU, with an HTML report.

Everything is written under the demo folder; the registry lives at ``$ASSETKIT_HOME`` when that
is set, else under the demo folder, so a demo never touches a user's real registry unasked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

SPEC_TEMPLATE = """\
# A pipeline spec: every name is a registry name or a path (relative to this file).
base: demo-sd15-tiny
loras:
  - {{name: demo-lora-tiny, scale: 0.8}}
controlnets:
  - {{name: demo-controlnet-tiny, conditioning_scale: 1.0}}
scheduler: {{class: EulerDiscreteScheduler}}
smoke: {{prompt: "a photograph of an astronaut riding a horse", steps: {steps}, height: 64, width: 64, seed: 0}}
"""


def save_demo_pipeline(dest: Path, seed: int = 0) -> Path:
    """A tiny SD1-layout diffusers pipeline whose tokenizer is the real CLIP tokenizer (49408
    tokens, from the catalogue) and whose text encoder has the matching vocabulary."""
    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .. import catalogue
    from ..factory.diffusers_models import _scheduler, quiet_libraries, tiny_unet, tiny_vae

    quiet_libraries()
    tok_dir = dest.parent / f".{dest.name}.tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    for name, data in catalogue.clip_tokenizer_files("clip-l").items():
        (tok_dir / name).write_bytes(data)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        hidden_act="quick_gelu"))
    pipe = StableDiffusionPipeline(vae=tiny_vae(seed=seed), text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=tiny_unet("sd1", decisive_dims=False, seed=seed), scheduler=_scheduler(False),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(dest))
    for file in tok_dir.iterdir():
        file.unlink()
    tok_dir.rmdir()
    return dest


def run_demo(directory: Path, steps: int = 2) -> dict[str, Any]:
    """Build, register, convert, lock, check; returns the summary document."""
    from ..convert import plan_diffusers_to_single_file, write_single_file
    from ..factory.pipeline_assets import save_tiny_controlnet, save_tiny_lora
    from ..formats import open_asset
    from ..registry import NotFoundError, Registry
    from .gate import run_check
    from .lock import lock_spec, write_lock
    from .spec import load_spec

    started = time.perf_counter()
    assets = directory / "pipeline-assets"
    assets.mkdir(parents=True, exist_ok=True)
    base = save_demo_pipeline(assets / "sd15-tiny-diffusers")
    lora = save_tiny_lora(base, assets / "lora-tiny.safetensors", text_encoder=True)
    controlnet = save_tiny_controlnet(base, assets / "controlnet-tiny")
    # one conversion between layouts: the diffusers UNet as an original-layout single file
    single = assets / "sd15-tiny-unet.safetensors"
    with open_asset(base / "unet") as unet:
        write_single_file(plan_diffusers_to_single_file(unet), unet, single, overwrite=True)
    home = Path(os.environ["ASSETKIT_HOME"]) if os.environ.get("ASSETKIT_HOME") else directory / "registry"
    registered = {}
    with Registry(home) as registry:
        for name, path in (("demo-sd15-tiny", base), ("demo-lora-tiny", lora),
                           ("demo-controlnet-tiny", controlnet)):
            try:
                record = registry.resolve(name)
            except NotFoundError:
                record = registry.add(path, name=name).record
            registered[name] = {"id": record.id, "sha256": record.sha256, "kind": record.kind}
    previous = os.environ.get("ASSETKIT_HOME")
    os.environ["ASSETKIT_HOME"] = str(home)
    try:
        spec_path = directory / "pipeline.yaml"
        spec_path.write_text(SPEC_TEMPLATE.format(steps=steps), encoding="utf-8")
        lock_path = directory / "pipeline.lock"
        write_lock(lock_spec(load_spec(spec_path)), lock_path)
        report_dir = directory / "report"
        result = run_check(lock_path, device="cpu", report_dir=report_dir, junit=directory / "junit.xml")
    finally:
        if previous is None:
            os.environ.pop("ASSETKIT_HOME", None)
        else:
            os.environ["ASSETKIT_HOME"] = previous
    return {"ok": result.ok, "directory": str(directory), "registry": str(home), "registered": registered,
            "converted": {"from": str(base / "unet"), "to": str(single)}, "spec": str(spec_path),
            "lock": str(lock_path), "report": result.report, "check": result.to_dict(),
            "seconds": round(time.perf_counter() - started, 1)}
