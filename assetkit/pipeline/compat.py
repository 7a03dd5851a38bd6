"""Compatibility before anything is loaded: headers, configs and probe results only (no torch).

Every decision is taken from the actual widths and shapes (cross-attention width, latent
channels, text-encoder widths, LoRA module shapes), so it works for fine-tunes of unknown family
and for tiny test models; family ids only add a check where both sides are known (an unknown
family is a warning, never by itself a failure). Each problem is a :class:`Finding` whose message
carries the evidence (the widths, the key that decided).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import catalogue
from ..findings import Finding
from ..formats import Asset, TensorInfo, open_asset
from .ip_adapter_compat import check_image_encoder, check_ip_adapter
from .lora_names import Renamer, renamer
from .spec import BASE_CONFIG_ROLE
from .tasks import AUTO_PIPELINES, task_findings

#: The schedulers a Stable Diffusion (UNet, epsilon/v) pipeline accepts (diffusers'
#: ``KarrasDiffusionSchedulers``) -> the options each one's config takes: ``registry/schedulers.json``
#: (a test holds it against diffusers' own ``_compatibles`` and ``__init__`` signatures).
UNET_SCHEDULER_OPTIONS: dict[str, frozenset[str]] = {
    name: frozenset(options) for name, options in catalogue.load("schedulers.json")["unet_pipelines"].items()}
UNET_SCHEDULERS = frozenset(UNET_SCHEDULER_OPTIONS)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

_LDM_BLOCKS = ("input_blocks", "output_blocks", "middle_block")
_DIFFUSERS_BLOCKS = ("down_blocks", "up_blocks", "mid_block")


# ---- facts from headers -----------------------------------------------------------------------

@dataclass
class UNetFacts:
    context_dim: int | None = None
    in_channels: int | None = None
    out_channels: int | None = None
    model_channels: int | None = None
    adm_in: int | None = None
    evidence: dict[str, str] = field(default_factory=dict)  #: fact -> the key that gave it

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("context_dim", "in_channels", "out_channels", "model_channels",
                                               "adm_in")}


def _first(tensors: dict[str, TensorInfo], suffixes: tuple[str, ...], dim: int) -> tuple[int | None, str]:
    """The ``dim`` size of the first tensor named exactly one of ``suffixes``, else ending in one."""
    for exact in (True, False):
        for suffix in suffixes:
            for name, info in tensors.items():
                hit = name == suffix if exact else name.endswith("." + suffix)
                if hit and len(info.shape) > dim:
                    return info.shape[dim], name
    return None, ""


def unet_facts(tensors: dict[str, TensorInfo]) -> UNetFacts:
    """Decisive widths of a UNet (or ControlNet) in diffusers or original names."""
    facts = UNetFacts()
    for attr, suffixes, dim in (
        ("context_dim", ("attn2.to_k.weight",), 1),
        ("in_channels", ("conv_in.weight", "input_blocks.0.0.weight"), 1),
        ("model_channels", ("conv_in.weight", "input_blocks.0.0.weight"), 0),
        ("out_channels", ("conv_out.weight", "out.2.weight"), 0),
        ("adm_in", ("add_embedding.linear_1.weight", "label_emb.0.0.weight"), 1),
    ):
        candidates = {n: i for n, i in tensors.items() if not n.startswith(("encoder.", "decoder.", "controlnet_cond_embedding."))}
        value, key = _first(candidates, suffixes, dim)
        setattr(facts, attr, value)
        if key:
            facts.evidence[attr] = f"{key} {list(tensors[key].shape)}"
    return facts


def text_width(tensors: dict[str, TensorInfo]) -> tuple[int | None, str]:
    value, key = _first(tensors, ("token_embedding.weight",), 1)
    return value, (f"{key} {list(tensors[key].shape)}" if key else "")


@dataclass
class Parts:
    """The components of a base model (diffusers folder or single file): name -> tensors/config."""

    tensors: dict[str, dict[str, TensorInfo]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    layout: str = "diffusers"


def split_parts(asset: Asset) -> Parts:
    if asset.format == "diffusers":
        parts = Parts(layout="diffusers")
        for name, comp in asset.components.items():
            parts.tensors[name] = comp.tensors
        for rel, config in asset.configs.items():
            folder, _, file = rel.partition("/")
            if file in ("config.json", "scheduler_config.json") and isinstance(config, dict):
                parts.configs[folder] = config
        return parts
    parts = Parts(layout="original")
    for name, info in asset.tensors.items():
        comp, rest = _single_file_part(name)
        if comp:
            parts.tensors.setdefault(comp, {})[rest] = info
    return parts


_EMBEDDER = re.compile(r"conditioner\.embedders\.(\d+)\.(?:transformer\.|model\.)?(.*)")


def _single_file_part(name: str) -> tuple[str | None, str]:
    for prefix, comp in (("model.diffusion_model.", "unet"), ("first_stage_model.", "vae"),
                         ("cond_stage_model.transformer.", "text_encoder"),
                         ("cond_stage_model.model.", "text_encoder"), ("cond_stage_model.", "text_encoder")):
        if name.startswith(prefix):
            return comp, name[len(prefix):]
    m = _EMBEDDER.match(name)
    if m:
        index = int(m.group(1))
        return ("text_encoder" if index == 0 else f"text_encoder_{index + 1}"), m.group(2)
    return None, name


# ---- LoRA modules ------------------------------------------------------------------------------

def _flat(name: str) -> str:
    flat = name.replace(".", "_")
    return flat.removeprefix("text_model_")


def base_modules(parts: Parts) -> dict[str, dict[str, tuple[int, ...]]]:
    """component -> flattened module name -> weight shape, for every weight of rank >= 2."""
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for comp, tensors in parts.tensors.items():
        if comp not in ("unet", "transformer") and not comp.startswith("text_encoder"):
            continue
        out[comp] = {_flat(n.removesuffix(".weight")): i.shape for n, i in tensors.items()
                     if n.endswith(".weight") and len(i.shape) >= 2}
    return out


@dataclass
class LoraModule:
    component: str
    module: str  #: flattened
    key: str  #: one of its keys, for the evidence
    down: tuple[int, ...] | None = None
    up: tuple[int, ...] | None = None


_KOHYA = (("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"),
          ("lora_te_", "text_encoder"), ("lora_transformer_", "transformer"))
_PEFT = (("unet.", "unet"), ("text_encoder_2.", "text_encoder_2"), ("text_encoder.", "text_encoder"),
         ("transformer.", "transformer"))


def lora_modules(asset: Asset) -> list[LoraModule]:
    """The adapted modules of a LoRA file in any of the key namings of the catalogue."""
    from ..probe.lora import lora_suffix

    modules: dict[tuple[str, str], LoraModule] = {}
    for key, info in asset.tensors.items():
        found = lora_suffix(key)
        if found is None:
            continue
        suffix, _layout, role = found
        raw = key[: -len(suffix)].removeprefix("base_model.model.")
        comp, rest = "unet", raw
        for prefix, c in _KOHYA + _PEFT:
            if raw.startswith(prefix):
                comp, rest = c, raw[len(prefix):]
                break
        rest = rest.replace(".processor.", ".")
        module = modules.setdefault((comp, _flat(rest)), LoraModule(comp, _flat(rest), key))
        if role == "down":
            module.down, module.key = info.shape, key
        elif role == "up":
            module.up = info.shape
    return list(modules.values())


def _scheme(names: Any) -> str | None:
    names = list(names)
    if any(n.startswith(_LDM_BLOCKS) for n in names):
        return "ldm"
    if any(n.startswith(_DIFFUSERS_BLOCKS) for n in names):
        return "diffusers"
    if any(n.startswith(("transformer_resblocks", "resblocks")) for n in names):
        return "openclip"
    if any(n.startswith("encoder_layers") for n in names):
        return "hf"
    return None


def lora_coverage(lora: list[LoraModule], base: dict[str, dict[str, tuple[int, ...]]], where: str,
                  rename: Renamer | None = None) -> tuple[dict[str, dict[str, int]], list[Finding]]:
    """matched/total per component and a finding for every unmatched module or shape mismatch.

    Where the LoRA and the base name modules differently, ``rename`` (:mod:`.lora_names`: the
    converter's key maps) gives the base's modules in the LoRA's naming."""
    findings: list[Finding] = []
    coverage: dict[str, dict[str, int]] = {}
    by_comp: dict[str, list[LoraModule]] = {}
    for m in lora:
        by_comp.setdefault(m.component, []).append(m)
    for comp, modules in sorted(by_comp.items()):
        targets = base.get(comp)
        if targets is None:
            findings.append(Finding("lora-component-missing", "error",
                                    f"the LoRA adapts {len(modules)} modules of {comp}, which the base does not have "
                                    f"(base components: {', '.join(sorted(base)) or 'none'})", where))
            coverage[comp] = {"matched": 0, "total": len(modules)}
            continue
        lora_scheme, base_scheme = _scheme(m.module for m in modules), _scheme(targets)
        if lora_scheme and base_scheme and lora_scheme != base_scheme and rename is not None:
            renamed = rename(comp, lora_scheme)
            if renamed:
                targets, base_scheme = renamed, lora_scheme
        if lora_scheme and base_scheme and lora_scheme != base_scheme:
            findings.append(Finding("lora-coverage-unchecked", "warning",
                                    f"{comp}: the LoRA names modules in {lora_scheme} naming, the base in "
                                    f"{base_scheme} naming; module coverage not checked (e.g. {modules[0].key})",
                                    where))
            coverage[comp] = {"matched": -1, "total": len(modules)}
            continue
        matched, unmatched, mismatched = 0, [], []
        for m in modules:
            shape = targets.get(m.module)
            if shape is None:
                unmatched.append(m)
                continue
            problems = []
            if m.down is not None and len(m.down) >= 2 and m.down[1] != shape[1]:
                problems.append(f"input width {m.down[1]} != base {shape[1]}")
            if m.up is not None and m.up[0] != shape[0]:
                problems.append(f"output width {m.up[0]} != base {shape[0]}")
            if problems:
                mismatched.append((m, shape, problems))
            else:
                matched += 1
        coverage[comp] = {"matched": matched, "total": len(modules)}
        if unmatched:
            findings.append(Finding("lora-unmatched", "error",
                                    f"{comp}: {len(unmatched)} of {len(modules)} LoRA modules have no module in the "
                                    f"base (first: {unmatched[0].key})", where))
        if mismatched:
            m, shape, problems = mismatched[0]
            findings.append(Finding("lora-shape-mismatch", "error",
                                    f"{comp}: {len(mismatched)} of {len(modules)} LoRA modules do not fit the base "
                                    f"(first: {m.key}: {'; '.join(problems)}, base weight {list(shape)})", where))
    return coverage, findings


# ---- the whole check ---------------------------------------------------------------------------

@dataclass
class CompatReport:
    findings: list[Finding] = field(default_factory=list)
    base: dict[str, Any] = field(default_factory=dict)
    components: dict[str, dict[str, Any]] = field(default_factory=dict)  #: role -> facts and coverage

    @property
    def ok(self) -> bool:
        return not any(f.failing for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "base": self.base, "components": self.components,
                "findings": [f.to_dict() for f in self.findings]}


def _probe(asset: Asset) -> Any:
    from ..probe import probe

    return probe(asset)


def _family_check(role: str, name: str, result: Any, base_family: str | None, out: CompatReport) -> None:
    fam = result.family
    where = f"{role} {name}"
    if base_family is None or fam is None:
        out.findings.append(Finding("family-unknown", "warning",
                                    f"family of the {'base' if base_family is None else role} unknown "
                                    f"({fam or 'unknown'} on {base_family or 'unknown'}); decided by widths only",
                                    where))
        return
    compatible = {base_family} | ({"sdxl"} if base_family == "sdxl-refiner" else set())
    if fam not in compatible:
        out.findings.append(Finding("family-mismatch", "error",
                                    f"{result.kind} of family {fam} on a base of family {base_family}", where))


def _scheduler_check(spec: Any, parts: Parts, probe_prediction: str | None, out: CompatReport) -> None:
    sched_config = parts.configs.get("scheduler", {})
    base_prediction = sched_config.get("prediction_type") or probe_prediction
    out.base["prediction_type"] = base_prediction
    requested = dict(spec.scheduler or {})
    cls = requested.get("class")
    if cls and cls not in UNET_SCHEDULERS and out.base.get("denoiser", "unet") == "unet":
        out.findings.append(Finding("scheduler-incompatible", "error",
                                    f"{cls} is not among the schedulers a UNet pipeline accepts "
                                    f"({', '.join(sorted(UNET_SCHEDULERS))})", "scheduler"))
    target = cls or sched_config.get("_class_name")  # overrides without a class apply to the base's
    options = UNET_SCHEDULER_OPTIONS.get(target or "")
    unknown = sorted(set(requested) - {"class"} - options) if options is not None else []
    if unknown:  # diffusers' from_config would drop them with a log line: the override silently not applied
        import difflib

        close = [m for key in unknown for m in difflib.get_close_matches(key, options, n=1)]
        guess = f"; did you mean {', '.join(close)}?" if close else ""
        out.findings.append(Finding("scheduler-unknown-key", "error",
                                    f"{target} has no option {', '.join(unknown)}{guess} (it takes: "
                                    f"{', '.join(sorted(options))})", "scheduler"))
    prediction = requested.get("prediction_type")
    if prediction is not None and prediction not in PREDICTION_TYPES:
        out.findings.append(Finding("scheduler-prediction", "error",
                                    f"unknown prediction_type {prediction!r} ({', '.join(PREDICTION_TYPES)})",
                                    "scheduler"))
    elif prediction and base_prediction and prediction != base_prediction:
        source = "scheduler/scheduler_config.json" if sched_config.get("prediction_type") else "the probe"
        out.findings.append(Finding("scheduler-prediction", "error",
                                    f"the scheduler asks for {prediction} but the base is {base_prediction} "
                                    f"(from {source}); a v-prediction model sampled as epsilon gives grey images",
                                    "scheduler"))


def check_compatibility(spec: Any, sources: dict[str, Any]) -> CompatReport:
    """Compatibility of every component of ``spec`` with its base; ``sources``: role -> Source."""
    out = CompatReport()
    base_src = sources["base"]
    with open_asset(base_src.path) as base_asset:
        base_result = _probe(base_asset)
        parts = split_parts(base_asset)
    base_family = base_result.family
    unet_tensors = parts.tensors.get("unet", {})
    base_unet = unet_facts(unet_tensors)
    widths = {comp: text_width(t) for comp, t in parts.tensors.items() if comp.startswith("text_encoder")}
    vae_cfg = parts.configs.get("vae", {})
    fam = catalogue.load("families.json")["families"].get(base_family or "", {})
    base_scaling = vae_cfg.get("scaling_factor", fam.get("vae_scaling_factor"))
    out.base = {"path": str(base_src.path), "family": base_family, "kind": base_result.kind,
                "layout": parts.layout, "unet": base_unet.to_dict(),
                "text_encoders": {c: w for c, (w, _) in widths.items()}, "vae_scaling_factor": base_scaling,
                "denoiser": "transformer" if "transformer" in parts.tensors else "unet"}
    if base_result.kind != "pipeline":
        out.findings.append(Finding("base-not-pipeline", "error",
                                    f"the base is a {base_result.kind}, not a full checkpoint or pipeline folder",
                                    f"base {base_src.name}"))
    if base_family is None:
        out.findings.append(Finding("family-unknown", "warning", "family of the base unknown; decided by widths only",
                                    f"base {base_src.name}"))
    modules = base_modules(parts)
    rename = renamer(Path(base_src.path), parts, _flat)
    for role, src in sources.items():
        if role in ("base", BASE_CONFIG_ROLE):  # the base's configs are read by the conversion, not probed
            continue
        with open_asset(src.path) as asset:
            result = _probe(asset)
            facts: dict[str, Any] = {"path": str(src.path), "kind": result.kind, "family": result.family,
                                     "layout": result.layout}
            where = f"{role} {src.name}"
            if base_family is not None and role not in ("vae", "image_encoder"):
                _family_check(role, src.name, result, base_family, out)
            if role.startswith("lora"):
                _expect_kind(result, "lora", where, out)
                coverage, findings = lora_coverage(lora_modules(asset), modules, where, rename)
                facts["coverage"] = coverage
                out.findings.extend(findings)
            elif role.startswith("controlnet"):
                _expect_kind(result, "controlnet", where, out)
                facts.update(_controlnet(asset, base_unet, where, out))
            elif role == "vae":
                facts.update(_vae(asset, base_unet, base_scaling, spec, where, out))
            elif role.startswith("textual_inversion"):
                facts.update(_embedding(asset, widths, where, out))
            elif role == "ip_adapter":
                _expect_kind(result, "ip_adapter", where, out)
                facts.update(_with_findings(check_ip_adapter(asset.tensors, unet_tensors, base_unet.context_dim,
                                                              where), out))
            elif role == "image_encoder":
                facts.update(_with_findings(check_image_encoder(asset.tensors, out.components.get("ip_adapter"),
                                                                where), out))
            out.components[role] = facts
    if spec.ip_adapter is not None and not spec.ip_adapter.image_encoder:
        out.findings.append(Finding("image-encoder-missing", "error", "the IP-Adapter needs an image_encoder (a CLIP "
                                    "vision model folder) to turn smoke.ip_adapter_image into image tokens",
                                    "ip_adapter"))
    if out.base["denoiser"] == "unet":
        task, findings = task_findings(spec.task, base_unet, controlnets=len(spec.controlnets))
        out.base |= {"task": task, "pipeline": AUTO_PIPELINES[task]}
        out.findings.extend(findings)
    _scheduler_check(spec, parts, base_result.prediction_type, out)
    return out


def _with_findings(facts_and_findings: tuple[dict[str, Any], list[Finding]], out: CompatReport) -> dict[str, Any]:
    facts, findings = facts_and_findings
    out.findings.extend(findings)
    return facts


def _expect_kind(result: Any, kind: str, where: str, out: CompatReport) -> None:
    if result.kind != kind:
        out.findings.append(Finding("wrong-kind", "error", f"expected a {kind}, this is a {result.kind}", where))


def _controlnet(asset: Asset, base: UNetFacts, where: str, out: CompatReport) -> dict[str, Any]:
    tensors = {n.removeprefix("control_model."): i for n, i in asset.tensors.items()}
    cn = unet_facts(tensors)
    cond, cond_key = _first(tensors, ("controlnet_cond_embedding.conv_in.weight", "input_hint_block.0.weight"), 1)
    for attr, what in (("context_dim", "cross-attention width"), ("model_channels", "UNet channels"),
                       ("adm_in", "added-conditioning width"), ("in_channels", "latent channels")):
        mine, theirs = getattr(cn, attr), getattr(base, attr)
        if mine != theirs and (mine is not None or theirs is not None):
            out.findings.append(Finding(
                "controlnet-mismatch", "error",
                f"{what}: ControlNet {mine} ({cn.evidence.get(attr, 'absent')}) != base {theirs} "
                f"({base.evidence.get(attr, 'absent')})", where))
    return {"unet": cn.to_dict(), "conditioning_channels": cond, "conditioning_key": cond_key}


def _dominant_dtype(asset: Asset) -> str | None:
    counts = Counter(i.dtype for i in asset.tensors.values())
    return counts.most_common(1)[0][0] if counts else None


def _vae(asset: Asset, base: UNetFacts, base_scaling: float | None, spec: Any, where: str,
         out: CompatReport) -> dict[str, Any]:
    tensors = {n.removeprefix("first_stage_model.").removeprefix("vae."): i for n, i in asset.tensors.items()}
    latent, key = _first(tensors, ("decoder.conv_in.weight",), 1)
    config = next((c for rel, c in asset.configs.items() if rel.endswith("config.json")), {}) or {}
    scaling = config.get("scaling_factor")
    dtype = _dominant_dtype(asset)
    if latent is None:
        out.findings.append(Finding("vae-not-vae", "error", "no decoder.conv_in.weight: not a VAE", where))
    elif base.in_channels is not None and latent != base.out_channels:
        out.findings.append(Finding("vae-latent-channels", "error",
                                    f"a {latent}-channel VAE ({key} {list(tensors[key].shape)}) on a "
                                    f"{base.out_channels}-channel UNet ({base.evidence.get('out_channels')})", where))
    if scaling is not None and base_scaling is not None and abs(float(scaling) - float(base_scaling)) > 1e-4:
        out.findings.append(Finding("vae-scaling-factor", "error",
                                    f"VAE scaling_factor {scaling} (its config.json) != the base's {base_scaling}: "
                                    f"latents would be scaled wrongly (an SDXL VAE on SD1 or the reverse)", where))
    if scaling is None:
        out.findings.append(Finding("vae-scaling-unknown", "info",
                                    f"a bare VAE file has no scaling_factor; the base's {base_scaling} is used", where))
    fp16 = dtype == "F16" or getattr(spec, "dtype", "auto") == "fp16"
    sdxl_scaled = scaling is not None and abs(float(scaling) - 0.13025) < 1e-4
    if fp16 and sdxl_scaled and config.get("force_upcast", True) is not False:
        out.findings.append(Finding("vae-fp16-sdxl", "warning",
                                    "an SDXL VAE in fp16 that is not the fp16-fixed kind (force_upcast not false): "
                                    "it overflows to NaN in fp16 unless upcast to fp32 for decoding", where))
    return {"latent_channels": latent, "scaling_factor": scaling, "dtype": dtype}


def _embedding(asset: Asset, widths: dict[str, tuple[int | None, str]], where: str,
               out: CompatReport) -> dict[str, Any]:
    found: dict[str, int] = {}
    for name, info in asset.tensors.items():
        width = info.shape[-1] if info.shape else None
        if name == "clip_g":
            found["text_encoder_2"] = width
        elif name == "clip_l" or name == "emb_params" or name.startswith("string_to_param") or len(asset.tensors) == 1:
            found["text_encoder"] = width
    for comp, width in found.items():
        base_width, evidence = widths.get(comp, (None, ""))
        if base_width is None:
            out.findings.append(Finding("embedding-mismatch", "error",
                                        f"the embedding has {comp} vectors of width {width}, the base has no {comp}",
                                        where))
        elif width != base_width:
            out.findings.append(Finding("embedding-mismatch", "error",
                                        f"{comp} vectors of width {width} != the base's {base_width} ({evidence})",
                                        where))
    return {"widths": found}


def compat_paths(spec: Any, root: Path | None = None) -> CompatReport:
    """Resolve ``spec``'s names (relative to ``root``, default the spec's folder) and check them
    (a convenience for the API)."""
    import dataclasses

    from .sources import resolve_spec

    if root is not None:
        spec = dataclasses.replace(spec, source=Path(root) / (spec.source.name if spec.source else "spec.yaml"))
    return check_compatibility(spec, resolve_spec(spec))
