"""Shared pieces of the probers: the probing context, scoring, and the UNet family rule that
UNets and ControlNets (a UNet encoder copy) both use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import catalog
from .claims import Claims
from .keys import KeyView, fmt_shape


@dataclass
class Context:
    """What a prober may know besides the tensor names.

    ``config`` is the component's ``config.json`` (diffusers folders), ``parent_family`` the
    family of the checkpoint a component belongs to, ``scalar`` reads one 0-dim tensor's value
    by full name (LoRA alpha) and returns None when it cannot.
    """

    claims: Claims = field(default_factory=Claims)
    config: dict[str, Any] | None = None
    parent_family: str | None = None
    scalar: Callable[[str], float | None] | None = None


def score(signature: float, coverage: float) -> float:
    """A verdict's score: signature completeness weighted by the share of tensors it explains."""
    return round(0.6 * max(0.0, min(1.0, signature)) + 0.4 * max(0.0, min(1.0, coverage)), 3)


def signature_fraction(view: KeyView, required: list[str]) -> tuple[float, list[str]]:
    """Share of ``required`` keys present, and the missing ones."""
    missing = view.missing(required)
    return (len(required) - len(missing)) / len(required), missing


@dataclass
class UNetFacts:
    """Decisive shapes of an SD-style UNet (or a ControlNet's UNet-encoder copy)."""

    in_channels: int | None
    model_channels: int | None
    context_dim: int | None
    adm_in_channels: int | None
    family: str | None
    families: list[str]
    evidence: list[str]
    model: str | None = None  #: a known model the widths name (``sd2.1-unclip-h``)


def unet_facts(view: KeyView, conv_in: str, adm_key: str, cross_suffix: str | list[str]) -> UNetFacts:
    """Family of an SD-style UNet from its cross-attention width, ``adm`` input and channels.

    ``cross_suffix`` may list several key suffixes that carry the context width as their input
    dimension (a full ``attn2.to_k.weight`` first, then low-rank ``attn2.to_k.down`` factors).
    """
    evidence: list[str] = []
    conv_shape = view.shape(conv_in)
    in_channels = conv_shape[1] if conv_shape and len(conv_shape) == 4 else None
    model_channels = conv_shape[0] if conv_shape else None
    suffixes = [cross_suffix] if isinstance(cross_suffix, str) else list(cross_suffix)
    context_key = next((k for sfx in suffixes if (k := view.first_with_suffix(sfx))), None)
    context_dim = view.dim(context_key, 1) if context_key else None
    adm = view.dim(adm_key, 1)
    table = catalog.unet_families()
    model: str | None = None
    if context_key:
        evidence.append(f"{view.describe(context_key)}: cross-attention context width {context_dim}")
    if adm is not None:
        evidence.append(f"{view.describe(adm_key)}: pooled-embedding (adm) input {adm}")
        by_adm = [fid for fid, unet in table if unet.get("adm_in_channels") == adm]
        if context_dim is not None:
            agree = [fid for fid in by_adm if dict(table)[fid].get("context_dim") == context_dim]
            by_adm = agree or by_adm
        if not by_adm:
            # An image-embedding input (SD 2.1 unCLIP) on a family that has no pooled text input.
            for fid, unet in table:
                named = (unet.get("image_adm_in_channels") or {}).get(str(adm))
                if named and unet.get("context_dim") in (context_dim, None):
                    by_adm.append(fid)
                    model = named
                    evidence.append(f"adm input {adm} with context {context_dim}: the image-embedding "
                                    f"conditioning of {named} ({fid})")
        families = by_adm
    elif context_dim is not None:
        families = [fid for fid, unet in table if unet.get("context_dim") == context_dim
                    and unet.get("adm_in_channels") is None]
    else:
        families = [fid for fid, unet in table if unet.get("model_channels") == model_channels]
        if families:
            evidence.append(f"{view.describe(conv_in)}: no cross-attention found, {model_channels} channels "
                            f"fit {', '.join(families)}")
    if len(families) > 1 and model_channels is not None:
        narrowed = [fid for fid in families if dict(table)[fid].get("model_channels") == model_channels]
        families = narrowed or families
    family = families[0] if len(families) == 1 else None
    if family is not None:
        evidence.append(f"UNet widths (context {context_dim}, adm {adm}, channels {model_channels}) "
                        f"are those of {family}")
    elif context_dim is not None and not families:
        evidence.append(f"cross-attention width {context_dim} matches no known family")
    if model is not None and family is None:
        model = None
    return UNetFacts(in_channels, model_channels, context_dim, adm, family, families, evidence, model)


def in_channels_evidence(view: KeyView, conv_in: str, in_channels: int | None) -> tuple[str | None, str, bool]:
    """(variant, evidence, known) from the UNet input width."""
    known, variant = catalog.variant_for_unet_in_channels(in_channels)
    shape = fmt_shape(view.shape(conv_in))
    if not known:
        return None, f"{view.full(conv_in)} {shape}: unusual input width {in_channels}", False
    if variant:
        return variant, f"{view.full(conv_in)} {shape}: {in_channels} input channels = {variant} UNet", True
    return None, f"{view.full(conv_in)} {shape}: {in_channels} latent input channels (plain text-to-image)", True
