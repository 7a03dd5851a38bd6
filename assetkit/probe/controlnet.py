"""Is this a ControlNet: original (lllyasviel, with or without ``control_model.``), diffusers
(SD1/SD2/SDXL by context width and pooled input), a Stability Control-LoRA, a diffusers SD3/FLUX
ControlNet or an XLabs FLUX ControlNet?"""

from __future__ import annotations

from . import catalog
from .base import Context, score, signature_fraction, unet_facts
from .keys import KeyView
from .result import Verdict

_UNET_LAYOUTS = ("original", "diffusers")


def probe_controlnet(view: KeyView, ctx: Context) -> Verdict | None:
    sigs = catalog.signatures()["controlnet"]
    unet_sig = catalog.signatures()["unet"]
    cross_suffix = [unet_sig["cross_attention_suffix"], *unet_sig.get("cross_attention_suffixes_lowrank", [])]
    best: Verdict | None = None
    for layout, sig in sigs.items():
        fraction, missing = signature_fraction(view, sig["required"])
        if fraction < 0.66:
            continue
        if layout in _UNET_LAYOUTS:
            verdict = _unet_verdict(view, layout, sig, fraction, missing, cross_suffix)
        else:
            verdict = _dit_verdict(view, layout, sig, fraction, missing)
        if best is None or verdict.score > best.score:
            best = verdict
    return best


def _unet_verdict(view: KeyView, layout: str, sig: dict, fraction: float, missing: list[str],
                  cross_suffix: list[str]) -> Verdict:
    facts = unet_facts(view, sig["conv_in"], sig["adm"], cross_suffix)
    hint = view.shape(sig["hint"])
    conditioning = hint[1] if hint and len(hint) == 4 else None
    evidence = [f"{view.describe(sig['required'][0])}: ControlNet hint encoder ({layout} names), "
                f"{conditioning} conditioning channels",
                f"{view.describe(sig['required'][1])}: zero-convolution outputs"]
    if missing:
        evidence.append(f"missing keys: {', '.join(view.full(k) for k in missing)}")
    evidence.extend(facts.evidence)
    details = {
        "conditioning_channels": conditioning,
        "context_dim": facts.context_dim,
        "in_channels": facts.in_channels,
        "model_channels": facts.model_channels,
    }
    if facts.adm_in_channels is not None:
        details["adm_in_channels"] = facts.adm_in_channels
    marker = sig.get("control_lora_marker")
    if marker and marker in view:
        down = view.first_with_suffix(sig["control_lora_suffix"])
        rank = view.dim(down, 0) if down else None
        details["control_lora"] = True
        details["rank"] = rank
        evidence.append(f"{view.full(marker)} present: Stability Control-LoRA (the ControlNet's UNet copy is "
                        f"stored as rank-{rank} .up/.down factors over the base model's weights)")
    return Verdict(
        kind="controlnet",
        family=facts.family,
        families=[] if facts.family else facts.families,
        layout="original" if layout == "original" else "diffusers",
        score=score(fraction, view.coverage(sig["claims"])),
        prober="controlnet",
        evidence=evidence,
        details=details,
    )


def _dit_verdict(view: KeyView, layout: str, sig: dict, fraction: float, missing: list[str]) -> Verdict:
    family = sig["family"]
    names = sig.get("layout", "diffusers")
    hidden = view.dim(sig["hidden"], 0)
    evidence = [f"{view.describe(sig['required'][0])}: {family} ControlNet ({names} names), hidden {hidden}"]
    if sig.get("note"):
        evidence.append(sig["note"])
    if missing:
        evidence.append(f"missing keys: {', '.join(view.full(k) for k in missing)}")
    details = {"hidden_size": hidden, "blocks": view.count("controlnet_blocks.*.")}
    if family == "flux":
        details["single_blocks"] = view.count("controlnet_single_blocks.*.")
    if names == "original":
        details["double_blocks"] = view.count("double_blocks.*.")
    return Verdict(
        kind="controlnet",
        family=family,
        layout=names,
        score=score(fraction, view.coverage(sig["claims"])),
        prober=f"controlnet:{layout}",
        evidence=evidence,
        details=details,
    )
