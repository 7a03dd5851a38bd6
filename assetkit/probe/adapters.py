"""Is this an IP-Adapter (``image_proj.*`` + ``ip_adapter.*``; XLabs FLUX) or a T2I-Adapter
(TencentARC original full/light/style, diffusers ``adapter.*``)?"""

from __future__ import annotations

from . import catalog
from .base import Context, score, signature_fraction
from .keys import KeyView
from .result import Verdict


def probe_ip_adapter(view: KeyView, ctx: Context) -> Verdict | None:
    sigs = catalog.signatures()["ip_adapter"]
    best: Verdict | None = None
    for layout, sig in sigs.items():
        present = [p for p in sig["required_prefixes"] if view.has_prefix(p)]
        if len(present) < len(sig["required_prefixes"]):
            continue
        if layout == "original":
            verdict = _ip_original(view, sig)
        else:
            marker = view.first_with_suffix(sig["key_marker"])
            if marker is None:
                continue
            verdict = Verdict(
                kind="ip_adapter", family=sig["family"], layout="original",
                score=score(1.0, view.coverage(sig["claims"])), prober=f"ip_adapter:{layout}",
                evidence=[f"{view.describe(marker)}: XLabs FLUX IP-Adapter double-stream projection"],
                details={"image_embed_dim": None},
            )
        if best is None or verdict.score > best.score:
            best = verdict
    return best


def _ip_original(view: KeyView, sig: dict) -> Verdict:
    key = view.first_with_suffix(sig["key_suffix"])
    cross = view.dim(key, 1) if key else None
    families = catalog.families_by_context_dim(cross)
    family = families[0] if len(families) == 1 else None
    evidence = ["image_proj.* and ip_adapter.* present: IP-Adapter (image projection + decoupled cross-attention)"]
    details: dict = {"cross_attention_dim": cross, "layers": view.count("ip_adapter.*.")}
    if key:
        evidence.append(f"{view.describe(key)}: cross-attention width {cross}"
                        + (f" = {family}" if family else " (no single family)"))
    if sig["resampler"] in view:
        latents = view.shape(sig["resampler"])
        details["projection"] = "resampler"
        details["tokens"] = latents[1] if latents and len(latents) == 3 else None
        proj_in = view.dim("image_proj.proj_in.weight", 1)
        details["image_embed_dim"] = proj_in
        evidence.append(f"{view.describe(sig['resampler'])}: Resampler projection (IP-Adapter Plus)")
    elif sig["plain_proj"] in view:
        out_dim, embed = view.shape(sig["plain_proj"])[:2]
        details["projection"] = "linear"
        details["image_embed_dim"] = embed
        details["tokens"] = out_dim // cross if cross else None
        evidence.append(f"{view.describe(sig['plain_proj'])}: linear image projection, "
                        f"{details['tokens']} token(s) from a {embed}-wide image embedding")
    elif view.has_prefix("image_proj.proj.0."):
        details["projection"] = "mlp"
        details["image_embed_dim"] = view.dim("image_proj.proj.0.weight", 1)
        evidence.append(f"{view.describe('image_proj.proj.0.weight')}: MLP image projection (FaceID-style)")
    lora_key = next((k for k in view.names() if k.startswith("ip_adapter.") and k.endswith("_lora.down.weight")), None)
    if lora_key:
        details["lora_rank"] = view.dim(lora_key, 0)
        evidence.append(f"{view.describe(lora_key)}: LoRA on the UNet attention layers shipped with the "
                        "adapter (IP-Adapter FaceID)")
    return Verdict(
        kind="ip_adapter",
        family=family,
        families=[] if family else families,
        layout="original",
        score=score(1.0 if key else 0.7, view.coverage(sig["claims"])),
        prober="ip_adapter",
        evidence=evidence,
        details=details,
    )


def probe_t2i_adapter(view: KeyView, ctx: Context) -> Verdict | None:
    sigs = catalog.signatures()["t2i_adapter"]
    factors = sigs["pixel_unshuffle_families"]
    best: Verdict | None = None
    for layout, sig in sigs.items():
        if layout == "pixel_unshuffle_families":
            continue
        fraction, missing = signature_fraction(view, sig["required"])
        if fraction < 1.0:
            continue
        conv = next((k for k in sig["conv_in"] if k in view), None)
        in_width = view.dim(conv, 1) if conv else None
        family, factor, channels = _unshuffle_family(in_width, factors)
        evidence = [f"{view.describe(sig['required'][0])}: T2I-Adapter ({layout} names)"]
        details: dict = {"adapter": layout.replace("original-", "") if "-" in layout else "full"}
        if layout == "diffusers" and conv and conv.endswith("in_conv.weight"):
            details["adapter"] = "light"
        if conv:
            details["in_width"] = in_width
            if factor:
                details["downscale_factor"] = factor
                details["conditioning_channels"] = channels
                evidence.append(f"{view.describe(conv)}: {channels} channel(s) x pixel-unshuffle {factor}^2 "
                                f"= {family}")
            else:
                evidence.append(f"{view.describe(conv)}: input width {in_width} fits no known downscale factor")
        if layout == "original-style":
            family = "sd1"
            evidence.append("style adapter (CLIP-vision tokens for SD1 cross-attention)")
        layout_id = "diffusers" if layout == "diffusers" else "original"
        verdict = Verdict(
            kind="t2i_adapter", family=family, layout=layout_id,
            score=score(fraction, view.coverage(sig["claims"])),
            prober=f"t2i_adapter:{layout}", evidence=evidence, details=details,
        )
        if best is None or verdict.score > best.score:
            best = verdict
    return best


def _unshuffle_family(width: int | None, factors: dict[str, str]) -> tuple[str | None, int | None, int | None]:
    if not width:
        return None, None, None
    for factor_text, family in sorted(factors.items(), key=lambda kv: -int(kv[0])):
        factor = int(factor_text)
        for channels in (3, 1):
            if width == channels * factor * factor:
                return family, factor, channels
    return None, None, None
