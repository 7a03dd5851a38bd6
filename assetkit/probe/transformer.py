"""Is this a DiT denoiser: SD3/3.5 MMDiT or FLUX.1 (dev or schnell), original or diffusers names?"""

from __future__ import annotations

from . import catalog
from .base import Context, score, signature_fraction
from .keys import KeyView
from .result import Verdict


def probe_transformer(view: KeyView, ctx: Context) -> Verdict | None:
    sigs = catalog.signatures()["transformer"]
    best: Verdict | None = None
    for name, sig in sigs.items():
        fraction, missing = signature_fraction(view, sig["required"])
        if fraction < 0.75 or any(k in view for k in sig.get("forbidden", [])):
            continue
        verdict = _verdict(view, name, sig, fraction, missing)
        if best is None or verdict.score > best.score:
            best = verdict
    return best


def _verdict(view: KeyView, name: str, sig: dict, fraction: float, missing: list[str]) -> Verdict:
    family = sig["family"]
    layout = sig["layout"]
    hidden = view.dim(sig["hidden"], 0)
    in_channels = view.dim(sig["in_channels"], 1)
    depth = view.count(sig["blocks"])
    evidence = [
        f"{view.describe(sig['required'][1])}: {'MMDiT joint block' if family == 'sd3' else 'double-stream block'} "
        f"({layout} names)",
        f"{view.describe(sig['hidden'])}: hidden size {hidden}",
    ]
    if missing:
        evidence.append(f"missing keys: {', '.join(view.full(k) for k in missing)}")
    details: dict = {"hidden_size": hidden, "depth": depth, "in_channels": in_channels}
    context_in = view.dim(sig.get("context_in"), 1)
    pooled_in = view.dim(sig.get("pooled_in"), 1)
    if context_in is not None:
        details["context_in"] = context_in
    if pooled_in is not None:
        details["pooled_in"] = pooled_in
    variant = None
    if family == "flux":
        single = view.count(sig["single_blocks"])
        details["single_blocks"] = single
        guidance_key = sig["guidance"]
        details["guidance"] = guidance_key in view
        if guidance_key in view:
            details["model"] = "flux.1-dev"
            evidence.append(f"{view.full(guidance_key)} present: guidance-distilled FLUX.1 dev")
        else:
            details["model"] = "flux.1-schnell"
            evidence.append(f"no {view.full(guidance_key)}: timestep-distilled FLUX.1 schnell (no guidance input)")
        table = catalog.families()
        key = str(in_channels)
        if key in table["flux_in_channels_variants"]:
            variant = table["flux_in_channels_variants"][key]
            details["conditioning"] = table["flux_in_channels_notes"][key]
            evidence.append(f"{view.describe(sig['in_channels'])}: {table['flux_in_channels_notes'][key]}")
        details["depth_double"] = depth
    else:
        qk_norm = sig.get("qk_norm") in view if sig.get("qk_norm") else False
        dual = sig.get("dual_attention") in view if sig.get("dual_attention") else False
        details["qk_norm"] = qk_norm
        details["dual_attention_blocks"] = dual
        model = _sd3_model(hidden, depth, qk_norm, dual)
        if model:
            details["model"] = model
            evidence.append(f"{depth} joint blocks, hidden {hidden}"
                            f"{', qk-norm' if qk_norm else ''}{', dual attention (MMDiT-X)' if dual else ''}: {model}")
        patch = view.shape(sig["in_channels"])
        if patch and len(patch) == 4:
            details["patch_size"] = patch[2]
    sizes = catalog.family_table()[family].get("transformer_hidden_sizes", {})
    if hidden is not None and str(hidden) not in sizes:
        evidence.append(f"hidden size {hidden} is not a released {family} size (a tiny or custom model)")
    return Verdict(
        kind="transformer",
        family=family,
        layout=layout,
        score=score(fraction, view.coverage(sig["claims"])),
        prober=f"transformer:{name}",
        variant=variant,
        evidence=evidence,
        details=details,
    )


def _sd3_model(hidden: int | None, depth: int, qk_norm: bool, dual: bool) -> str | None:
    if hidden == 2432 or depth == 38:
        return "sd3.5-large"
    if dual:
        return "sd3.5-medium"
    if hidden == 1536 and depth == 24:
        return "sd3.5-medium" if qk_norm else "sd3-medium"
    return None
