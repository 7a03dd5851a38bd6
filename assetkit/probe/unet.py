"""Is this an SD-style UNet (SD1, SD2, SDXL base/refiner, and their inpaint/depth/pix2pix/upscale
variants), in original (ldm/sgm) or diffusers names?"""

from __future__ import annotations

from ..findings import Finding
from . import catalog
from .base import Context, in_channels_evidence, score, signature_fraction, unet_facts
from .keys import KeyView
from .result import Verdict


def probe_unet(view: KeyView, ctx: Context) -> Verdict | None:
    sigs = catalog.signatures()["unet"]
    best: Verdict | None = None
    for layout in ("original", "diffusers"):
        sig = sigs[layout]
        fraction, missing = signature_fraction(view, sig["required"])
        if sig["conv_in"] not in view or fraction < 0.5:
            continue
        verdict = _verdict(view, ctx, layout, sig, fraction, missing, sigs["cross_attention_suffix"])
        if best is None or verdict.score > best.score:
            best = verdict
    return best


def _verdict(view: KeyView, ctx: Context, layout: str, sig: dict, fraction: float, missing: list[str],
             cross_suffix: str) -> Verdict:
    facts = unet_facts(view, sig["conv_in"], sig["adm"], cross_suffix)
    evidence = [f"{view.describe(sig['conv_in'])}: UNet input convolution ({layout} names)"]
    if missing:
        evidence.append(f"missing UNet keys: {', '.join(view.full(k) for k in missing)}")
    evidence.extend(facts.evidence)
    variant, variant_note, known = in_channels_evidence(view, sig["conv_in"], facts.in_channels)
    evidence.append(variant_note)
    findings: list[Finding] = []
    if not known:
        findings.append(Finding("unusual-in-channels", "info",
                                f"UNet takes {facts.in_channels} input channels, not a known variant",
                                view.full(sig["conv_in"])))
    details: dict = {
        "in_channels": facts.in_channels,
        "model_channels": facts.model_channels,
        "context_dim": facts.context_dim,
    }
    if facts.adm_in_channels is not None:
        details["adm_in_channels"] = facts.adm_in_channels
    if facts.model is not None:
        details["model"] = facts.model
    class_shape = view.shape(sig["class_embedding"])
    if class_shape:
        details["class_embeddings"] = class_shape[0]
        evidence.append(f"{view.describe(sig['class_embedding'])}: noise-level class embedding "
                        "(latent upscaler)")
    depth = view.count(sig["transformer_depth_block"])
    if depth:
        details["transformer_depth"] = depth
    for key in sig["first_proj_in"]:
        shape = view.shape(key)
        if shape is not None:
            details["linear_proj"] = len(shape) == 2
            break
    # Checks that tell a variant apart when the input width alone could not (upscaler vs others).
    if variant == "upscale" and class_shape is None:
        evidence.append("7 input channels without a noise-level embedding: not the x4 upscaler")
    family = facts.family
    return Verdict(
        kind="unet",
        family=family,
        families=[] if family else facts.families,
        layout=layout,
        score=score(fraction, view.coverage(sig["claims"])),
        prober="unet",
        variant=variant,
        evidence=evidence,
        details=details,
        findings=findings,
    )

