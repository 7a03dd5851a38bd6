"""Assemble a diffusers pipeline offline from resolved (or locked) components.

torch and diffusers are imported inside the functions. Nothing is fetched: every component is a
local diffusers folder (single files are converted to one first with ``assetkit.convert``), loaded
with ``local_files_only=True``; afterwards no parameter may be on the meta device or missing from
the files (randomly initialised).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AssetkitError
from ..findings import Finding
from .spec import BASE_CONFIG_ROLE
from .tasks import AUTO_PIPELINES, resolve_task

_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class Assembled:
    pipe: Any
    device: str
    dtype: str
    adapters: list[str] = field(default_factory=list)
    lora_scales: list[float] = field(default_factory=list)
    controlnet_scales: list[float] = field(default_factory=list)
    load_seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    task: str = "text-to-image"
    ip_adapter_scale: float | None = None  #: None: no IP-Adapter
    plain_attn_processors: dict[str, Any] | None = None  #: the UNet's processors before the IP-Adapter


def choose_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise AssetkitError("--device cuda asked for, but torch sees no CUDA device")
    return requested


def choose_dtype(requested: str, device: str) -> str:
    if requested == "auto":
        return "fp16" if device == "cuda" else "fp32"
    return requested


#: What a spec offers a single-file base that does not fit the catalogue's configs.
SPEC_CONFIG_HINT = "give it its own configs in the spec: base: {name: FILE, config: DIR}"
#: ... and a single-file VAE or ControlNet (the spec has no configs for those).
COMPONENT_CONFIG_HINT = ("convert it with its own configs first (assetkit convert FILE OUT --to diffusers "
                         "--config DIR) and name OUT in the spec")


def as_diffusers_folder(path: Path, workdir: Path | None = None, sha256: str | None = None, *,
                        config_dir: Path | None = None, hint: str = COMPONENT_CONFIG_HINT) -> Path:
    """``path`` itself when it is a folder; a single original-layout file converted to a diffusers
    folder once per content and configs (:mod:`.assembled_cache`: under the registry, or
    ``workdir``), with ``config_dir``'s configs when given, else the catalogue's. A file that
    does not fit the configs is a ConfigMismatchError whose hint is ``hint`` (how the caller
    gives a file its own configs), or names ``config_dir`` when those were the configs."""
    if path.is_dir():
        return path
    from ..convert import ConfigMismatchError
    from .assembled_cache import cached_diffusers_folder

    try:
        return cached_diffusers_folder(path, sha256=sha256, root=workdir, config_dir=config_dir)
    except ConfigMismatchError as exc:
        raise exc.with_hint(f"configs from {config_dir}" if config_dir is not None else hint) from None


def _params_from_files(module: Any, folder: Path, role: str) -> list[Finding]:
    """Every parameter on a real device and present in the component's weight files."""
    from ..formats import open_asset

    findings: list[Finding] = []
    on_meta = [n for n, p in module.named_parameters() if p.device.type == "meta"]
    if on_meta:
        findings.append(Finding("assemble-meta", "error",
                                f"{len(on_meta)} parameters left on the meta device (first: {on_meta[0]})", role))
    try:
        with open_asset(folder) as asset:
            stored = set(asset.tensors)
    except AssetkitError:
        return findings
    names = [n for n, _ in module.named_parameters()]
    missing = [n for n in names if n not in stored and f"text_model.{n}" not in stored
               and n.removeprefix("text_model.") not in stored]
    if missing:
        findings.append(Finding("assemble-random-init", "error",
                                f"{len(missing)} of {len(names)} parameters are not in the files and were "
                                f"randomly initialised (first: {missing[0]})", role))
    return findings


def assemble(spec: Any, sources: dict[str, Any], *, device: str = "auto", workdir: Path | None = None,
             config_hint: str = SPEC_CONFIG_HINT) -> Assembled:
    """Build the spec's pipeline from ``sources`` (role -> Source with a local path).

    ``config_hint``: how the caller gives a single-file base its own configs, shown when the file
    does not fit the catalogue's (``assetkit smoke`` says ``--config DIR``)."""
    import tempfile

    import diffusers
    import torch

    from ..factory.diffusers_models import quiet_libraries

    quiet_libraries()
    started = time.perf_counter()
    device = choose_device(device if device != "auto" else spec.device)
    dtype = choose_dtype(spec.dtype, device)
    torch_dtype = getattr(torch, _TORCH_DTYPES[dtype])
    config = sources.get(BASE_CONFIG_ROLE)
    base = as_diffusers_folder(Path(sources["base"].path), workdir, sources["base"].sha256,
                               config_dir=Path(config.path) if config else None, hint=config_hint)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True}
    encoder_folder = None
    if spec.ip_adapter is not None:
        from .ip_adapter_load import load_image_encoder

        encoder_folder, kwargs["image_encoder"] = load_image_encoder(sources, torch_dtype)
    controlnets = []
    for i in range(len(spec.controlnets)):
        src = sources[f"controlnet[{i}]"]
        folder = as_diffusers_folder(Path(src.path), workdir, src.sha256)
        controlnets.append((folder, diffusers.ControlNetModel.from_pretrained(str(folder), **kwargs)))
    if controlnets:
        models = [m for _, m in controlnets]
        kwargs["controlnet"] = models[0] if len(models) == 1 else models
    vae_folder = None
    if spec.vae:
        vae_folder = as_diffusers_folder(Path(sources["vae"].path), workdir, sources["vae"].sha256)
        kwargs["vae"] = diffusers.AutoencoderKL.from_pretrained(str(vae_folder), dtype=torch_dtype,
                                                                local_files_only=True)
    task = resolve_task(spec.task, *_unet_channels(base))
    auto = getattr(diffusers, AUTO_PIPELINES[task])
    try:
        pipe = auto.from_pretrained(str(base), **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise AssetkitError(f"diffusers could not build the pipeline offline: {exc}", where=str(base)) from None
    findings: list[Finding] = []
    for name in ("unet", "transformer", "text_encoder", "text_encoder_2", "vae"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        folder = vae_folder if name == "vae" and vae_folder else base / name
        findings += _params_from_files(module, folder, name)
    if encoder_folder is not None:
        findings += _params_from_files(pipe.image_encoder, encoder_folder, "image_encoder")
    for i, (folder, model) in enumerate(controlnets):
        findings += _params_from_files(model, folder, f"controlnet[{i}]")
    if spec.scheduler:
        overrides = {k: v for k, v in spec.scheduler.items() if k != "class"}
        cls = getattr(diffusers, spec.scheduler["class"], None)
        if cls is None:
            raise AssetkitError(f"scheduler: diffusers has no class {spec.scheduler['class']}")
        import inspect

        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(overrides) - accepted)
        if unknown:  # from_config would ignore them with a log line: the override silently not applied
            findings.append(Finding("scheduler-unknown-key", "error",
                                    f"{cls.__name__} has no option {', '.join(unknown)} (it takes: "
                                    f"{', '.join(sorted(accepted))})", "scheduler"))
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)
    adapters = []
    for i in range(len(spec.loras)):
        name = f"lora{i}"
        pipe.load_lora_weights(str(sources[f"lora[{i}]"].path), adapter_name=name)
        adapters.append(name)
    if adapters:
        pipe.set_adapters(adapters, adapter_weights=[lora.scale for lora in spec.loras])
    for i, ti in enumerate(spec.textual_inversions):
        pipe.load_textual_inversion(str(sources[f"textual_inversion[{i}]"].path), token=ti.token)
    plain_processors = None
    if spec.ip_adapter is not None:
        from .ip_adapter_load import load_ip_adapter

        plain_processors = load_ip_adapter(pipe, Path(sources["ip_adapter"].path), spec.ip_adapter.scale,
                                           workdir or Path(tempfile.gettempdir()) / "assetkit-assemble")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return Assembled(pipe, device, dtype, adapters, [lora.scale for lora in spec.loras],
                     [c.scale for c in spec.controlnets], time.perf_counter() - started, findings, task,
                     spec.ip_adapter.scale if spec.ip_adapter else None, plain_processors)


def _unet_channels(base: Path) -> tuple[int | None, int | None]:
    """(in, out) channels from the base folder's ``unet/config.json`` (None for a transformer base)."""
    import json

    try:
        config = json.loads((base / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    return config.get("in_channels"), config.get("out_channels")
