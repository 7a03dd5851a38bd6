"""Is this an autoencoder (VAE)? 4-channel SD VAEs share their shapes across SD1, SD2 and SDXL,
16-channel ones across SD3 and FLUX: the family comes only from a config, metadata or the
checkpoint around it, otherwise the verdict stays ambiguous (candidates, never a guess)."""

from __future__ import annotations

from . import catalog
from .base import Context, score, signature_fraction
from .keys import KeyView
from .result import Verdict


def probe_vae(view: KeyView, ctx: Context) -> Verdict | None:
    sigs = catalog.signatures()["vae"]
    best: Verdict | None = None
    for layout in ("original", "diffusers"):
        sig = sigs[layout]
        fraction, missing = signature_fraction(view, sig["required"])
        if fraction < 0.75:
            continue
        verdict = _verdict(view, ctx, layout, sig, fraction, missing, sigs["training_prefix"])
        if best is None or verdict.score > best.score:
            best = verdict
    return best


def _verdict(view: KeyView, ctx: Context, layout: str, sig: dict, fraction: float, missing: list[str],
             training_prefix: str) -> Verdict:
    latent = view.dim(sig["latent"], 1)
    evidence = [f"{view.describe(sig['required'][1])}: VAE encoder block ({layout} names)",
                f"{view.describe(sig['latent'])}: {latent} latent channels"]
    if missing:
        evidence.append(f"missing keys: {', '.join(view.full(k) for k in missing)}")
    details: dict = {
        "latent_channels": latent,
        "levels": view.count(sig["levels"]),
        "quant_conv": sig["quant_conv"] in view,
    }
    if not details["quant_conv"]:
        evidence.append("no quant_conv: SD3/FLUX-style autoencoder" if latent == 16 else "no quant_conv")
    training = view.with_prefix(training_prefix)
    if training:
        details["training_tensors"] = training
        evidence.append(f"{training} training-loss tensors under {view.full(training_prefix)} (LPIPS/discriminator)")
    families = catalog.families_by_latent_channels(latent)
    family, families = narrow_vae_family(families, ctx, evidence)
    return Verdict(
        kind="vae",
        family=family,
        families=[] if family else families,
        layout=layout,
        score=score(fraction, view.coverage(sig["claims"])),
        prober="vae",
        evidence=evidence,
        details=details,
    )


def narrow_vae_family(families: list[str], ctx: Context, evidence: list[str]) -> tuple[str | None, list[str]]:
    """Narrow the families a VAE's shapes allow using its config and the surrounding checkpoint."""
    table = catalog.family_table()
    cfg = ctx.config or {}
    keys = catalog.diffusers_classes()["config_keys"]["vae"]
    scaling = cfg.get(keys["scaling_factor"])
    shift = cfg.get(keys["shift_factor"])
    if isinstance(scaling, (int, float)) and families:
        by_scale = [fid for fid in families if _close(table[fid].get("vae_scaling_factor"), scaling)]
        if isinstance(shift, (int, float)) and by_scale:
            by_shift = [fid for fid in by_scale if _close(table[fid].get("vae_shift_factor", 0.0), shift)]
            by_scale = by_shift or by_scale
        if by_scale:
            evidence.append(f"config.json scaling_factor {scaling}"
                            f"{f', shift_factor {shift}' if shift is not None else ''} fits {', '.join(by_scale)}")
            families = by_scale
    parent = ctx.parent_family
    if parent and table.get(parent, {}).get("vae_of", parent) in families:
        evidence.append(f"part of a {parent} checkpoint")
        return parent, families
    if len(families) == 1:
        return families[0], families
    if families:
        evidence.append(f"shapes are shared by {', '.join(families)}: the tensors cannot tell which")
    return None, families


def _close(a: object, b: float) -> bool:
    return isinstance(a, (int, float)) and abs(float(a) - float(b)) <= 1e-4 * max(1.0, abs(float(b)))
