"""Is this a single-file checkpoint whose tensors sit under component prefixes (ldm/sgm/ComfyUI:
``model.diffusion_model.``, ``first_stage_model.``, ``cond_stage_model.``, ``conditioner.embedders.N.``,
``text_encoders.NAME.``, ``control_model.``)? Each group is probed as its own component."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ..findings import Finding
from . import catalog
from .base import Context, score
from .controlnet import probe_controlnet
from .keys import KeyView, match_group
from .result import Component, Verdict
from .text_encoder import probe_text_encoder
from .transformer import probe_transformer
from .unet import probe_unet
from .vae import probe_vae

Prober = Callable[[KeyView, Context], "Verdict | None"]

#: Which probers may answer for each group role of a full checkpoint (defined here, where it is used).
ROLE_PROBERS: dict[str, list[Prober]] = {
    "denoiser": [probe_unet, probe_transformer],
    "controlnet": [probe_controlnet],
    "vae": [probe_vae],
    "text_encoder": [probe_text_encoder],
}

_MODEL_ROLES = ("denoiser", "controlnet", "vae", "text_encoder")
_OTHER_LABELS = {
    "schedule": "noise-schedule buffers",
    "noise_augmentor": "low-resolution noise augmentation buffers (x4 upscaler)",
    "image_noise_augmentor": "image-embedding noise augmentation buffers (unCLIP)",
    "training": "training-loss tensors",
    "ema": "EMA bookkeeping",
}


def split_groups(view: KeyView) -> tuple[dict[str, tuple[str, list[str]]], list[str], list[str]]:
    """(concrete prefix -> (role, names)), schedule buffer names, unmatched names."""
    spec = catalog.signatures()["checkpoint"]
    patterns = sorted(spec["groups"], key=lambda g: -len(g["prefix"].replace("*", "")))
    schedule = set(spec["schedule_keys"])
    groups: dict[str, tuple[str, list[str]]] = {}
    schedule_names: list[str] = []
    other: list[str] = []
    for name in view.names():
        for group in patterns:
            concrete = match_group(name, group["prefix"])
            if concrete is not None:
                groups.setdefault(concrete, (group["role"], []))[1].append(name)
                break
        else:
            (schedule_names if name in schedule else other).append(name)
    return groups, schedule_names, other


def probe_checkpoint(view: KeyView, ctx: Context) -> Verdict | None:
    groups, schedule_names, other = split_groups(view)
    model_groups = {p: g for p, g in groups.items() if g[0] in _MODEL_ROLES}
    if not model_groups:
        return None
    spec = catalog.signatures()["checkpoint"]
    evidence: list[str] = []
    findings: list[Finding] = []
    components: dict[str, Component] = {}
    verdicts: dict[str, Verdict] = {}
    details: dict = {}

    def run(prefix: str, role: str, parent: str | None) -> Verdict | None:
        sub = view.sub(prefix)
        sub_ctx = Context(claims=ctx.claims, parent_family=parent, scalar=ctx.scalar)
        found = [v for prober in ROLE_PROBERS.get(role, []) if (v := prober(sub, sub_ctx))]
        return max(found, key=lambda v: v.score) if found else None

    # The denoiser (or the ControlNet) decides the family; the other parts are read in its light.
    lead: Verdict | None = None
    for role in ("controlnet", "denoiser"):
        for prefix, (group_role, _names) in model_groups.items():
            if group_role == role:
                verdict = run(prefix, role, None)
                if verdict is not None:
                    verdicts[prefix] = verdict
                    lead = lead or verdict
    family = lead.family if lead else None
    for prefix, (role, _names) in model_groups.items():
        if prefix not in verdicts and role not in ("controlnet", "denoiser"):
            verdict = run(prefix, role, family)
            if verdict is not None:
                verdicts[prefix] = verdict
    if not verdicts:
        return None
    if lead is None and family is None:
        family = _common_family(verdicts.values())

    for prefix, verdict in verdicts.items():
        name = _component_name(verdict, family, components)
        sub = view.sub(prefix)
        comp_family = verdict.family
        if comp_family is None and family in verdict.families:
            comp_family = family
        components[name] = Component(
            name=name, kind=verdict.kind, family=comp_family, layout=verdict.layout,
            parameters=sub.parameters, bytes=sub.nbytes, dtypes=sub.dtype_counts(), tensors=len(sub),
            source=prefix, details=_component_details(verdict),
        )
        head = f"{prefix}* ({len(sub)} tensors): {comp_family or '/'.join(verdict.families) or 'unknown-family'} " \
               f"{verdict.kind}, {verdict.layout} names"
        evidence.append(head)
        evidence.extend(verdict.evidence if verdict is lead else verdict.evidence[:2])
        findings.extend(verdict.findings)
        if family and verdict is not lead:
            findings.extend(_mismatch(verdict, family, name, prefix))
    auxiliary = spec.get("auxiliary", {})
    for prefix, (role, names) in groups.items():
        if prefix in verdicts:
            continue
        if role in auxiliary:
            # A model assetkit has no kind for (MiDaS, a CLIP image encoder): kept as a component.
            aux = auxiliary[role]
            sub = view.sub(prefix)
            components[aux["name"]] = Component(
                name=aux["name"], kind="unknown", family=family, layout="original",
                parameters=sub.parameters, bytes=sub.nbytes, dtypes=sub.dtype_counts(), tensors=len(sub),
                source=prefix, details={"model": aux["model"]})
            evidence.append(f"{prefix}* ({len(names)} tensors): {aux['note']}")
        elif role == "ema" and len(names) > spec["ema_min_keys"]:
            details.setdefault("other_tensors", {})["ema weights"] = len(names)
            evidence.append(f"{prefix}* ({len(names)} tensors): an EMA copy of the weights")
        else:
            label = _OTHER_LABELS.get(role, f"unidentified {role} tensors")
            details.setdefault("other_tensors", {})[label] = details.get("other_tensors", {}).get(label, 0) \
                + len(names)
            evidence.append(f"{prefix}* ({len(names)} tensors): {label}")
    if schedule_names:
        details.setdefault("other_tensors", {})["noise-schedule buffers"] = len(schedule_names)
        evidence.append(f"{len(schedule_names)} noise-schedule buffers ({', '.join(schedule_names[:3])}...)")
    edm = spec.get("edm")
    if edm and other and all(k in other for k in edm["keys"]):
        other = [n for n in other if n not in edm["keys"]]
        details["edm"] = True
        details["model"] = edm["model"]
        details.setdefault("other_tensors", {})["EDM latent statistics"] = len(edm["keys"])
        evidence.append(f"{', '.join(edm['keys'])}: {edm['note']}")
    if other:
        details.setdefault("other_tensors", {})["unrecognised"] = len(other)
        heads = Counter(n.split(".", 1)[0] for n in other).most_common(5)
        evidence.append(f"{len(other)} tensors outside known groups: {', '.join(f'{h} ({n})' for h, n in heads)}")
    markers = [k for k in spec["v_prediction_markers"] if k in view]
    if markers:
        details["v_prediction_marker"] = markers[0]
    if any(k in view for k in spec["ztsnr_markers"]):
        details["ztsnr"] = True
        evidence.append("ztsnr key present: trained with zero terminal SNR")

    kind, main = _kind(lead, verdicts, components)
    if kind == "pipeline" and main is not None:
        encoders = [c.details.get("text_encoder") for c in components.values() if c.kind == "text_encoder"]
        details["text_encoders"] = [e for e in encoders if e]
        if not encoders:
            evidence.append("no text encoders in the file: they must come from elsewhere")
    if main is not None:
        for key, value in main.details.items():
            details.setdefault(key, value)
    explained = sum(len(names) for p, (r, names) in groups.items()) + len(schedule_names)
    signature = max(v.score for v in verdicts.values())
    result_family = main.family if main is not None and main.family else family
    families: list[str] = []
    if result_family is None:
        families = main.families if main is not None else []
    return Verdict(
        kind=kind,
        family=result_family,
        families=families,
        layout="original",
        score=score(signature, explained / len(view)),
        prober="checkpoint",
        variant=main.variant if main is not None else None,
        evidence=evidence,
        details=details,
        components=components,
        findings=findings,
    )


def _kind(lead: Verdict | None, verdicts: dict[str, Verdict], components: dict[str, Component]) \
        -> tuple[str, Verdict | None]:
    """What the whole file is: a pipeline when a denoiser comes with a VAE or text encoder."""
    if lead is not None and lead.kind == "controlnet":
        return "controlnet", lead
    if lead is not None:
        companions = [c for c in components.values() if c.kind in ("vae", "text_encoder")]
        return ("pipeline" if companions else lead.kind), lead
    kinds = {v.kind for v in verdicts.values()}
    if len(verdicts) == 1:
        return next(iter(verdicts.values())).kind, next(iter(verdicts.values()))
    if kinds == {"text_encoder"}:
        return "text_encoder", None
    return "pipeline", None


def _common_family(verdicts) -> str | None:
    sets = [set(v.family_options) for v in verdicts if v.family_options]
    if not sets:
        return None
    common = set.intersection(*sets)
    return next(iter(common)) if len(common) == 1 else None


def _component_name(verdict: Verdict, family: str | None, taken: dict[str, Component]) -> str:
    if verdict.kind == "text_encoder":
        type_id = verdict.details.get("text_encoder")
        names = catalog.family_table().get(family or "", {}).get("text_encoders", {})
        for name, wanted in names.items():
            if wanted == type_id and name not in taken:
                return name
        base = "text_encoder"
    else:
        base = verdict.kind
    if base not in taken:
        return base
    n = 2
    while f"{base}_{n}" in taken:
        n += 1
    return f"{base}_{n}"


def _component_details(verdict: Verdict) -> dict:
    keep = ("text_encoder", "hidden_size", "layers", "latent_channels", "in_channels", "context_dim", "model",
            "conditioning_channels", "depth", "projection")
    return {k: v for k, v in verdict.details.items() if k in keep}


def _mismatch(verdict: Verdict, family: str, name: str, prefix: str) -> list[Finding]:
    options = verdict.family_options
    if not options or family in options:
        return []
    vae_of = catalog.family_table().get(family, {}).get("vae_of")
    if vae_of and vae_of in options:
        return []
    return [Finding("component-mismatch", "warning",
                    f"{name} is a {'/'.join(options)} {verdict.kind} inside a {family} checkpoint", prefix)]
