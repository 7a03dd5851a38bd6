"""Smoke generation: a few denoising steps at the spec's size, with a finding for every check.

Checks: latents finite at every step (the first step and module that produced a NaN), image finite,
not constant and not black; the pipeline's safety checker (when it has one) does not flag the image
(the deployed pipeline would return black; told apart from a NaN image); an fp16 VAE that gave NaN
is decoded again in fp32 ("VAE needs upcast": a warning when the pipeline upcasts it itself, an
error when the deployed pipeline would return NaN images); the same seed gives the same image; every LoRA
changes the output and scale 0 gives the base image; every ControlNet changes the output; the IP-
Adapter changes the output and scale 0 gives the base image; an init, mask or IP-Adapter image that
cannot be read is ``smoke-input``. Per-phase timings and peak memory
(``torch.cuda.max_memory_allocated`` on CUDA, else the process's peak RSS).
torch is imported inside the functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..findings import Finding
from .smoke_inputs import load_inputs, strength_finding, task_kwargs

STD_FLOOR = 0.02  #: an image whose pixel std (0..1 scale) is below this is constant
BLACK_MEAN = 0.02
SAME_TOLERANCE = {"cpu": 1e-5, "cuda": 2e-3}  #: max abs pixel difference still called "the same image"


@dataclass
class SmokeImage:
    label: str
    array: Any  #: H x W x 3 float32 numpy array in 0..1 (NaN kept)
    note: str = ""


@dataclass
class SmokeResult:
    findings: list[Finding] = field(default_factory=list)
    images: list[SmokeImage] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "fp32"

    @property
    def ok(self) -> bool:
        return not any(f.failing for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "device": self.device, "dtype": self.dtype,
                "timings": {k: round(v, 4) for k, v in self.timings.items()}, "memory": self.memory,
                "images": [{"label": i.label, "note": i.note} for i in self.images],
                "findings": [f.to_dict() for f in self.findings]}


def synthetic_condition(height: int, width: int) -> Any:
    """A conditioning image with edges (white squares and a diagonal on black)."""
    import numpy as np
    from PIL import Image

    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[height // 4: height // 2, width // 4: width // 2] = 255
    for i in range(min(height, width)):
        img[i, i] = 255
    img[3 * height // 5:, 3 * width // 5:] = 180
    return Image.fromarray(img)


def _is_sdxl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


class _Run:
    """One generation of the assembled pipeline, phase by phase."""

    def __init__(self, assembled: Any, spec: Any) -> None:
        self.a, self.spec = assembled, spec
        self.condition = None
        if spec.controlnets:
            from PIL import Image

            images = [Image.open(spec.root / c.image).convert("RGB") if c.image
                      else synthetic_condition(spec.smoke.height, spec.smoke.width) for c in spec.controlnets]
            self.condition = images[0] if len(images) == 1 else images
        self.inputs = load_inputs(spec, assembled.task, assembled.ip_adapter_scale is not None)
        if assembled.task != "text-to-image" and (too_few := strength_finding(assembled.pipe, spec)):
            self.inputs.findings.append(too_few)
        self.ip_enabled = True

    def encode(self) -> dict[str, Any]:
        s, pipe = self.spec.smoke, self.a.pipe
        cfg = s.guidance_scale > 1
        if _is_sdxl(pipe):
            pe, npe, ppe, nppe = pipe.encode_prompt(prompt=s.prompt, device=self.a.device, num_images_per_prompt=1,
                                                    do_classifier_free_guidance=cfg, negative_prompt=s.negative_prompt)
            out = {"prompt_embeds": pe, "pooled_prompt_embeds": ppe}
            if cfg:
                out |= {"negative_prompt_embeds": npe, "negative_pooled_prompt_embeds": nppe}
            return out
        pe, npe = pipe.encode_prompt(s.prompt, self.a.device, 1, cfg, s.negative_prompt)
        return {"prompt_embeds": pe, **({"negative_prompt_embeds": npe} if cfg else {})}

    def denoise(self, embeds: dict[str, Any], controlnet_scales: list[float] | None = None,
                on_step: Any = None) -> Any:
        import torch

        s = self.spec.smoke
        kwargs: dict[str, Any] = dict(embeds, num_inference_steps=s.steps, height=s.height, width=s.width,
                                      guidance_scale=s.guidance_scale, output_type="latent",
                                      generator=torch.Generator("cpu").manual_seed(s.seed))
        if self.condition is not None:
            scales = controlnet_scales if controlnet_scales is not None else self.a.controlnet_scales
            kwargs["image"] = self.condition
            kwargs["controlnet_conditioning_scale"] = scales[0] if len(scales) == 1 else scales
        kwargs = task_kwargs(self.a.pipe, self.spec, self.inputs, kwargs)
        if not self.ip_enabled:
            kwargs.pop("ip_adapter_image", None)
        if on_step is not None:
            kwargs["callback_on_step_end"] = on_step
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
        with torch.no_grad():
            return self.a.pipe(**kwargs).images

    def decode(self, latents: Any, dtype: Any = None) -> Any:
        import torch

        vae = self.a.pipe.vae
        if dtype is not None and vae.dtype != dtype:
            vae = vae.to(dtype)
        z = latents.to(vae.dtype)
        cfg = vae.config
        shift = getattr(cfg, "shift_factor", None) or 0.0
        with torch.no_grad():
            image = vae.decode(z / cfg.scaling_factor + shift, return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)  # NaN stays NaN

    def image(self, controlnet_scales: list[float] | None = None) -> Any:
        return _to_numpy(self.decode(self.denoise(self.encode(), controlnet_scales)))


def _to_numpy(image: Any) -> Any:
    return image[0].permute(1, 2, 0).float().cpu().numpy()


def _finite(x: Any) -> bool:
    import torch

    return bool(torch.isfinite(x).all())


def _first_nan_module(run: _Run, embeds: dict[str, Any]) -> str | None:
    """Run again with forward hooks: the first module whose output is not finite."""
    import torch

    found: list[str] = []
    handles = []
    for root_name in ("text_encoder", "text_encoder_2", "unet", "controlnet"):
        root = getattr(run.a.pipe, root_name, None)
        if not isinstance(root, torch.nn.Module):
            continue
        for name, module in root.named_modules():
            if list(module.children()):
                continue

            def hook(_m: Any, _i: Any, output: Any, label: str = f"{root_name}.{name}") -> None:
                tensor = output[0] if isinstance(output, tuple) else output
                if not found and isinstance(tensor, torch.Tensor) and not _finite(tensor):
                    found.append(label)

            handles.append(module.register_forward_hook(hook))
    try:
        run.denoise(run.encode() if embeds is None else embeds)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def _pixel_stats(array: Any) -> tuple[float, float]:
    return float(array.std()), float(array.mean())


def _max_diff(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.abs(a - b).max())


def _peak_memory(device: str) -> dict[str, Any]:
    import resource
    import sys

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, Any] = {"peak_rss_bytes": rss if sys.platform == "darwin" else rss * 1024}
    if device == "cuda":
        out["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    else:
        out["peak_cuda_bytes"] = None
        out["cuda_note"] = "no CUDA device: GPU memory could not be measured"
    return out


def _pipeline_upcasts_vae(pipe: Any) -> bool:
    """Whether ``pipe`` decodes an fp16 VAE in fp32 by itself: its ``__call__`` reads the VAE's
    ``force_upcast`` (diffusers' SDXL pipelines do, the SD 1.x/2.x ones do not) and the VAE's
    config sets it."""
    import inspect

    if not getattr(pipe.vae.config, "force_upcast", False):
        return False
    try:
        return "force_upcast" in inspect.getsource(type(pipe).__call__)
    except (OSError, TypeError):  # no source: the SDXL pipelines are the ones with upcast_vae
        return hasattr(pipe, "upcast_vae")


def _vae_needs_upcast(pipe: Any, dtype: str) -> Finding:
    """The finding for a VAE that decodes NaN in ``dtype`` and a finite image in fp32: a warning
    when the pipeline upcasts it itself, an error when the deployed pipeline would return NaN
    (black) images."""
    name = type(pipe).__name__
    first = f"the {dtype} VAE decoded NaN and decoding again in fp32 gave a finite image"
    if _pipeline_upcasts_vae(pipe):
        return Finding("vae-needs-upcast", "warning",
                       f"{first}; {name} upcasts it itself (force_upcast in vae/config.json), so its images are "
                       "finite but decoded in fp32 (slower, more memory); an fp16-fixed VAE decodes in fp16", "vae")
    why = "does not read force_upcast" if getattr(pipe.vae.config, "force_upcast", False) else \
        "force_upcast is not set in vae/config.json"
    return Finding("vae-needs-upcast", "error",
                   f"{first}; {name} decodes in {dtype} ({why}), so the deployed pipeline would return NaN (black) "
                   "images: run the VAE in fp32, set force_upcast (the SDXL pipelines honour it) or use an "
                   "fp16-fixed VAE", "vae")


def smoke(assembled: Any, spec: Any) -> SmokeResult:
    """Run the smoke checks on an assembled pipeline (see the module docstring)."""
    import numpy as np
    import torch

    result = SmokeResult(device=assembled.device, dtype=assembled.dtype)
    result.timings["load"] = assembled.load_seconds
    if assembled.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = _Run(assembled, spec)
    if run.inputs.findings:
        result.findings += run.inputs.findings
        result.memory = _peak_memory(assembled.device)
        return result
    t0 = time.perf_counter()
    with torch.no_grad():
        embeds = run.encode()
    t1 = time.perf_counter()
    result.timings["text_encoding"] = t1 - t0
    bad_embeds = [k for k, v in embeds.items() if not _finite(v)]
    bad_steps: list[int] = []

    def on_step(_pipe: Any, step: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if not bad_steps and not _finite(tensors["latents"]):
            bad_steps.append(step)
        return tensors

    latents = run.denoise(embeds, on_step=on_step)
    t2 = time.perf_counter()
    result.timings["denoising"] = t2 - t1
    image = run.decode(latents)
    result.timings["decoding"] = time.perf_counter() - t2
    if bad_embeds or bad_steps or not _finite(latents):
        module = _first_nan_module(run, embeds)
        where = f"text encoding ({', '.join(bad_embeds)})" if bad_embeds else \
            f"step {bad_steps[0] + 1 if bad_steps else spec.smoke.steps} of {spec.smoke.steps}"
        result.findings.append(Finding("smoke-nan-latents", "error",
                                       f"non-finite values in the latents from {where}; first module with a "
                                       f"non-finite output: {module or 'not found'}", module or "latents"))
    elif not _finite(image):
        if assembled.dtype != "fp32":
            retry = run.decode(latents, dtype=torch.float32)
            if _finite(retry):
                result.findings.append(_vae_needs_upcast(assembled.pipe, assembled.dtype))
                image = retry
            else:
                result.findings.append(Finding("smoke-nan-image", "error", "the VAE decodes NaN, in fp32 too", "vae"))
        else:
            result.findings.append(Finding("smoke-nan-image", "error",
                                           "the decoded image has NaN values (finite latents): the VAE", "vae"))
    main = _to_numpy(image)
    result.images.append(SmokeImage("output", main, f"seed {spec.smoke.seed}, {spec.smoke.steps} steps"))
    if np.isfinite(main).all():
        std, mean = _pixel_stats(main)
        if std < STD_FLOOR:
            code = "smoke-black-image" if mean < BLACK_MEAN else "smoke-constant-image"
            result.findings.append(Finding(code, "error",
                                           f"the image is {'black' if mean < BLACK_MEAN else 'constant'} (pixel std "
                                           f"{std:.4f} < {STD_FLOOR}, mean {mean:.4f}) with finite values: not a NaN "
                                           "image, and not a safety checker's (it never filters the smoke image)",
                                           "image"))
        _safety_checker(run, main, result)
    if not result.ok:
        result.memory = _peak_memory(assembled.device)
        return result
    _determinism(run, main, result)
    _lora_effects(run, main, result)
    _controlnet_effects(run, main, result)
    _task_images(run, result)
    _ip_adapter_effects(run, main, result)
    result.memory = _peak_memory(assembled.device)
    return result


def _safety_checker(run: _Run, main: Any, result: SmokeResult) -> None:
    """The pipeline's own safety checker (SD 1.x/2.x folders ship one) on the finite smoke image:
    when it flags it, the deployed pipeline returns a black image for this prompt (the smoke image
    shown is the unfiltered one, so a checker's black image is never mistaken for a NaN one)."""
    pipe = run.a.pipe
    checker = getattr(pipe, "safety_checker", None)
    if checker is None or getattr(pipe, "feature_extractor", None) is None:
        return
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its "Potential NSFW content" warning: reported as a finding
    try:
        _, flagged = pipe.run_safety_checker(main[None].copy(), run.a.device, checker.dtype)
    finally:
        diffusers_logging.set_verbosity(level)
    if flagged is not None and any(flagged):
        std, _ = _pixel_stats(main)
        result.findings.append(Finding(
            "safety-checker-black-image", "error",
            f"the pipeline's safety checker flags the smoke image (prompt {run.spec.smoke.prompt!r}): the deployed "
            f"pipeline returns a black image instead; the generated image itself is finite (pixel std {std:.3f}), "
            "not a NaN image", "safety_checker"))


def _determinism(run: _Run, main: Any, result: SmokeResult) -> None:
    again = run.image()
    diff = _max_diff(main, again)
    tolerance = SAME_TOLERANCE.get(run.a.device, 2e-3)
    if not diff <= tolerance:
        result.findings.append(Finding("smoke-nondeterministic", "error",
                                       f"the same seed gave a different image (max pixel difference {diff:.2e} > "
                                       f"{tolerance:.0e})", "image"))


def _lora_effects(run: _Run, main: Any, result: SmokeResult) -> None:
    pipe, names = run.a.pipe, run.a.adapters
    if not names:
        return
    tolerance = SAME_TOLERANCE.get(run.a.device, 2e-3)
    pipe.disable_lora()
    base = run.image()
    pipe.enable_lora()
    result.images.append(SmokeImage("without LoRAs", base, "LoRAs disabled"))
    pipe.set_adapters(names, adapter_weights=[0.0] * len(names))
    zero = run.image()
    diff = _max_diff(zero, base)
    if not diff <= tolerance:
        result.findings.append(Finding("lora-scale-zero", "error",
                                       f"all LoRA scales 0 did not give the base image (max difference {diff:.2e})",
                                       "loras"))
    for i, name in enumerate(names):
        scales = list(run.a.lora_scales)
        scales[i] = 0.0
        pipe.set_adapters(names, adapter_weights=scales)
        without = base if len(names) == 1 else run.image()
        change = _max_diff(main, without)
        if run.a.lora_scales[i] != 0 and change <= tolerance:
            result.findings.append(Finding("lora-no-effect", "error",
                                           f"{name} (scale {run.a.lora_scales[i]}) does not change the output (max "
                                           f"pixel difference {change:.2e}, within the same-seed tolerance "
                                           f"{tolerance:.0e}): its keys were probably not loaded", f"lora[{i}]"))
    pipe.set_adapters(names, adapter_weights=list(run.a.lora_scales))


def _controlnet_effects(run: _Run, main: Any, result: SmokeResult) -> None:
    scales = run.a.controlnet_scales
    tolerance = SAME_TOLERANCE.get(run.a.device, 2e-3)
    for i in range(len(scales)):
        off = list(scales)
        off[i] = 0.0
        without = run.image(controlnet_scales=off)
        if i == 0:
            result.images.append(SmokeImage("ControlNet off", without, "conditioning scale 0"))
            cond = run.condition[0] if isinstance(run.condition, list) else run.condition
            import numpy as np

            result.images.append(SmokeImage("conditioning", np.asarray(cond, dtype="float32") / 255.0,
                                            "the conditioning image"))
        change = _max_diff(main, without)
        if scales[i] != 0 and change <= tolerance:
            result.findings.append(Finding("controlnet-no-effect", "error",
                                           f"controlnet[{i}] does not change the output (max pixel difference "
                                           f"{change:.2e}, within the same-seed tolerance {tolerance:.0e})",
                                           f"controlnet[{i}]"))


def _task_images(run: _Run, result: SmokeResult) -> None:
    import numpy as np

    for label, image in (("init image", run.inputs.init_image), ("mask", run.inputs.mask_image),
                         ("IP-Adapter image", run.inputs.ip_adapter_image)):
        if image is not None:
            result.images.append(SmokeImage(label, np.asarray(image.convert("RGB"), dtype="float32") / 255.0,
                                            f"the smoke {label}"))


def _ip_adapter_effects(run: _Run, main: Any, result: SmokeResult) -> None:
    from .ip_adapter_load import without_ip_adapter

    scale = run.a.ip_adapter_scale
    if scale is None:
        return
    pipe, tolerance = run.a.pipe, SAME_TOLERANCE.get(run.a.device, 2e-3)
    pipe.set_ip_adapter_scale(0.0)
    try:
        zero = run.image()
    finally:
        pipe.set_ip_adapter_scale(scale)
    run.ip_enabled = False
    try:
        with without_ip_adapter(pipe, run.a.plain_attn_processors):
            base = run.image()
    finally:
        run.ip_enabled = True
    result.images.append(SmokeImage("without IP-Adapter", base, "IP-Adapter unloaded"))
    diff = _max_diff(zero, base)
    if not diff <= tolerance:
        result.findings.append(Finding("ip-adapter-scale-zero", "error",
                                       f"IP-Adapter scale 0 did not give the base image (max difference {diff:.2e} > "
                                       f"{tolerance:.0e})", "ip_adapter"))
    change = _max_diff(main, zero)
    if scale != 0 and change <= tolerance:
        result.findings.append(Finding("ip-adapter-no-effect", "error",
                                       f"the IP-Adapter (scale {scale}) does not change the output (max pixel "
                                       f"difference {change:.2e} from scale 0, within the same-seed tolerance "
                                       f"{tolerance:.0e}): its layers were probably not loaded", "ip_adapter"))
