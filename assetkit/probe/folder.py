"""diffusers folders: a pipeline (``model_index.json``) or one component (``config.json`` + weights).

The class names and configs say what each part should be; the tensors are probed as everywhere
else and win when the two disagree (a ``config-contradiction`` finding). A component folder
without readable weights is identified from its config alone, with a lower score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..findings import Finding
from ..formats.base import Asset
from . import catalog
from .base import Context
from .claims import Claims, read_claims
from .keys import KeyView
from .result import Component, Verdict
from .vae import narrow_vae_family

ProbeView = Callable[[KeyView, Context], list[Verdict]]
ScalarReader = Callable[[Asset], Callable[[str], "float | None"]]

#: (verdict detail, config key(s)) compared per kind when a component has both config and tensors.
_CONFIG_CHECKS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "unet": [("in_channels", ("in_channels",)), ("context_dim", ("cross_attention_dim",))],
    "controlnet": [("context_dim", ("cross_attention_dim",))],
    "vae": [("latent_channels", ("latent_channels",))],
    "transformer": [("in_channels", ("in_channels",))],
    "text_encoder": [("hidden_size", ("hidden_size", "d_model")), ("layers", ("num_hidden_layers", "num_layers"))],
}


def component_class(asset: Asset) -> str | None:
    """``_class_name`` of a diffusers config, or the first ``architectures`` entry of a transformers one."""
    cfg = asset.configs.get("config.json")
    if not isinstance(cfg, dict):
        return None
    cls = cfg.get("_class_name")
    if isinstance(cls, str):
        return cls
    archs = cfg.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    return None


def probe_component_folder(asset: Asset, claims: Claims, probe_view: ProbeView, scalar_reader: ScalarReader,
                           parent_family: str | None = None) -> list[Verdict]:
    """Every verdict on one component folder, best first (the config's kind preferred)."""
    cfg = asset.configs.get("config.json")
    cfg = cfg if isinstance(cfg, dict) else None
    cls = component_class(asset)
    kind_hint = catalog.diffusers_classes()["components"].get(cls or "")
    ctx = Context(claims=claims, config=cfg, parent_family=parent_family, scalar=scalar_reader(asset))
    verdicts = probe_view(KeyView.of(asset.tensors), ctx) if asset.tensors else []
    where = str(asset.path)
    from_config = config_verdict(cls, kind_hint, cfg, ctx) if cfg is not None else None
    if not verdicts:
        return [from_config] if from_config else []
    if kind_hint:
        matching = [v for v in verdicts if v.kind == kind_hint]
        if matching:
            best = matching[0]
            verdicts.remove(best)
            verdicts.insert(0, best)
            best.evidence.insert(0, f"config.json {cls}: a {kind_hint}, and the tensors agree")
        else:
            verdicts[0].findings.append(Finding(
                "config-contradiction", "warning",
                f"config.json names {cls} (a {kind_hint}) but the tensors are a {verdicts[0].kind}", where))
    best = verdicts[0]
    if cfg is not None:
        best.findings.extend(_config_checks(best, cfg, where))
        if best.family is None and from_config is not None and from_config.family \
                and (not best.families or from_config.family in best.families):
            best.family = from_config.family
            best.families = []
            best.evidence.append(f"family {from_config.family} from config.json")
    if from_config is not None:
        verdicts.append(from_config)
    return verdicts


def _config_checks(verdict: Verdict, cfg: dict[str, Any], where: str) -> list[Finding]:
    out: list[Finding] = []
    for detail, keys in _CONFIG_CHECKS.get(verdict.kind, []):
        seen = verdict.details.get(detail)
        stated = next((cfg[k] for k in keys if isinstance(cfg.get(k), int)), None)
        if seen is not None and stated is not None and seen != stated:
            out.append(Finding("config-contradiction", "warning",
                               f"config.json says {keys[0]}={stated} but the tensors have {seen} (the tensors win)",
                               where))
    return out


def config_verdict(cls: str | None, kind: str | None, cfg: dict[str, Any], ctx: Context) -> Verdict | None:
    """What a component config alone says (no tensors needed)."""
    if kind is None:
        return None
    evidence = [f"config.json _class_name {cls}: {kind}"]
    family: str | None = None
    families: list[str] = []
    variant = None
    details: dict[str, Any] = {}
    if kind in ("unet", "controlnet"):
        context = cfg.get("cross_attention_dim")
        adm = cfg.get("projection_class_embeddings_input_dim") if cfg.get("addition_embed_type") == "text_time" \
            else None
        table = catalog.unet_families()
        if adm is not None:
            families = [fid for fid, unet in table if unet.get("adm_in_channels") == adm]
        elif isinstance(context, int):
            families = [fid for fid, unet in table if unet.get("context_dim") == context
                        and unet.get("adm_in_channels") is None]
        if cls == "SD3ControlNetModel":
            families = ["sd3"]
        elif cls == "FluxControlNetModel":
            families = ["flux"]
        details.update({"context_dim": context, "in_channels": cfg.get("in_channels")})
        evidence.append(f"config.json cross_attention_dim {context}"
                        + (f", text_time embedding input {adm}" if adm else ""))
        if kind == "unet":
            _known, variant = catalog.variant_for_unet_in_channels(cfg.get("in_channels"))
    elif kind == "transformer":
        families = {"SD3Transformer2DModel": ["sd3"], "FluxTransformer2DModel": ["flux"]}.get(cls or "", [])
        if cls == "FluxTransformer2DModel":
            details["guidance"] = bool(cfg.get("guidance_embeds"))
            details["model"] = "flux.1-dev" if details["guidance"] else "flux.1-schnell"
            evidence.append(f"config.json guidance_embeds {cfg.get('guidance_embeds')}: {details['model']}")
        details["in_channels"] = cfg.get("in_channels")
    elif kind == "vae":
        latent = cfg.get("latent_channels")
        details["latent_channels"] = latent
        families = catalog.families_by_latent_channels(latent)
        fam, families = narrow_vae_family(families, ctx, evidence)
        families = [fam] if fam else families
    elif kind == "text_encoder":
        hidden = cfg.get("hidden_size") or cfg.get("d_model")
        group = "t5" if str(cfg.get("model_type", "")).startswith("t5") or cls == "T5EncoderModel" else "clip"
        type_id = catalog.text_encoder_type(group, hidden)
        details.update({"text_encoder": type_id, "hidden_size": hidden})
        if type_id:
            families = list(catalog.text_encoder_types()[type_id]["families"])
            evidence.append(f"config.json width {hidden}: {type_id}")
    elif kind == "t2i_adapter":
        factor = cfg.get("downscale_factor")
        fam = catalog.signatures()["t2i_adapter"]["pixel_unshuffle_families"].get(str(factor))
        families = [fam] if fam else []
    if ctx.parent_family and ctx.parent_family in families:
        family = ctx.parent_family
    elif len(families) == 1:
        family = families[0]
    return Verdict(kind=kind, family=family, families=[] if family else families, layout="diffusers",
                   score=0.5, prober="config", variant=variant, evidence=evidence, details=details)


def probe_pipeline_folder(asset: Asset, claims: Claims, probe_view: ProbeView,
                          scalar_reader: ScalarReader) -> list[Verdict]:
    """The verdict on a diffusers pipeline folder: its class, its components, its scheduler."""
    model_index = asset.configs.get("model_index.json") or {}
    cls = model_index.get("_class_name") if isinstance(model_index, dict) else None
    row = catalog.diffusers_classes()["pipelines"].get(cls or "")
    classes = catalog.diffusers_classes()["components"]
    evidence: list[str] = []
    findings: list[Finding] = []
    if row:
        variant_note = f" ({row['variant']})" if row.get("variant") else ""
        evidence.append(f"model_index.json _class_name {cls}: a {' or '.join(row['families'])} pipeline{variant_note}")
    else:
        evidence.append(f"model_index.json _class_name {cls!r}: a pipeline class assetkit does not know")

    def is_denoiser(name: str) -> bool:
        return classes.get(component_class(asset.components[name]) or "") in ("unet", "transformer") \
            or name in ("unet", "transformer", "prior")

    order = sorted(asset.components, key=lambda n: (0 if is_denoiser(n) else 1, n))
    family: str | None = None
    denoiser: Verdict | None = None
    verdicts: dict[str, Verdict] = {}
    others: dict[str, str] = {}
    for name in order:
        comp = asset.components[name]
        if not comp.tensors and "config.json" not in comp.configs:
            others[name] = _describe_other(comp)
            continue
        found = probe_component_folder(comp, read_claims(comp.metadata), probe_view, scalar_reader,
                                       parent_family=family)
        if not found:
            others[name] = component_class(comp) or "unidentified"
            continue
        verdict = found[0]
        verdicts[name] = verdict
        if denoiser is None and verdict.kind in ("unet", "transformer"):
            denoiser = verdict
            family = verdict.family
    if family is None and row and len(row["families"]) == 1:
        family = row["families"][0]
        evidence.append(f"family {family} from the pipeline class (no denoiser weights to confirm it)")
    if row and family and family not in row["families"]:
        findings.append(Finding("config-contradiction", "warning",
                                f"model_index.json names {cls} ({' or '.join(row['families'])}) but the "
                                f"denoiser is {family} (the tensors win)", str(asset.path)))
    variant = denoiser.variant if denoiser else (row or {}).get("variant")
    if denoiser and row and row.get("variant") and row["variant"] != denoiser.variant:
        evidence.append(f"{cls} implies {row['variant']} but the denoiser input says "
                        f"{denoiser.variant or 'a plain model'}")
    components: dict[str, Component] = {}
    for name in sorted(verdicts):
        verdict = verdicts[name]
        comp = asset.components[name]
        comp_family = verdict.family
        if comp_family is None and family in verdict.families:
            comp_family = family
        components[name] = Component(
            name=name, kind=verdict.kind, family=comp_family, layout=verdict.layout,
            parameters=comp.parameters, bytes=comp.nbytes, dtypes=comp.dtype_counts(), tensors=len(comp.tensors),
            source=f"{name}/", details={k: v for k, v in verdict.details.items()
                                        if k in ("text_encoder", "in_channels", "context_dim", "latent_channels",
                                                 "model", "hidden_size", "layers")},
        )
        evidence.append(f"{name}/ ({len(comp.tensors)} tensors): "
                        f"{comp_family or '/'.join(verdict.families) or 'unknown-family'} {verdict.kind}, "
                        f"{verdict.layout} names")
        evidence.extend(verdict.evidence[:3] if verdict is denoiser else verdict.evidence[:1])
        findings.extend(verdict.findings)
        if family and verdict.family_options and family not in verdict.family_options \
                and catalog.family_table().get(family, {}).get("vae_of") not in verdict.family_options:
            findings.append(Finding("component-mismatch", "warning",
                                    f"{name} is a {'/'.join(verdict.family_options)} {verdict.kind} inside a "
                                    f"{family} pipeline", f"{asset.path}/{name}"))
    details: dict[str, Any] = {"pipeline_class": cls}
    if denoiser is not None:
        for key, value in denoiser.details.items():
            details.setdefault(key, value)
    encoders = [c.details.get("text_encoder") for c in components.values() if c.kind == "text_encoder"]
    details["text_encoders"] = [e for e in encoders if e]
    if others:
        details["other_components"] = others
    scheduler = asset.configs.get("scheduler/scheduler_config.json")
    if isinstance(scheduler, dict) and isinstance(scheduler.get("prediction_type"), str):
        details["scheduler_prediction_type"] = scheduler["prediction_type"]
    families = [] if family else list((row or {}).get("families", []))
    return [Verdict(
        kind="pipeline", family=family, families=families, layout="diffusers",
        score=1.0 if row and denoiser else 0.7, prober="diffusers-pipeline", variant=variant,
        evidence=evidence, details=details, components=components, findings=findings,
    )]


def _describe_other(comp: Asset) -> str:
    for name in ("scheduler_config.json", "tokenizer_config.json", "preprocessor_config.json", "config.json"):
        cfg = comp.configs.get(name)
        if isinstance(cfg, dict):
            cls = cfg.get("_class_name") or cfg.get("tokenizer_class") or cfg.get("image_processor_type")
            if isinstance(cls, str):
                return cls
            return name.replace("_config.json", "")
    return "no weights"
