"""IP-Adapter and image-encoder compatibility from headers (no torch).

An IP-Adapter adds a key/value projection (``ip_adapter.N.to_k_ip`` / ``to_v_ip``) to every
cross-attention layer of the base UNet and an image projection (``image_proj.*``) that turns a
CLIP image encoder's output into image tokens. Checked: the adapter's cross-attention width
against the base's, its number of layers and their widths against the base's cross-attention
layers (``ip-adapter-mismatch``), and the width the image projection reads against what the
image encoder gives (``image-encoder-mismatch``): the projected image embedding for a plain
adapter, the penultimate hidden states for Plus / Full-face / FaceID-Plus adapters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..findings import Finding
from ..formats import TensorInfo


@dataclass
class Projection:
    """What an IP-Adapter's image projection reads."""

    kind: str  #: linear (plain), resampler (Plus), full (Full face), faceid-plus, faceid
    reads: str | None  #: "image_embeds" (the projected embedding), "hidden_states", or None (no CLIP)
    width: int | None
    key: str


def _shape(tensors: dict[str, TensorInfo], key: str) -> tuple[int, ...] | None:
    info = tensors.get(key)
    return tuple(info.shape) if info is not None else None


def _describe(tensors: dict[str, TensorInfo], key: str) -> str:
    return f"{key} {list(tensors[key].shape)}"


def image_projection(tensors: dict[str, TensorInfo]) -> Projection | None:
    """The image projection of an IP-Adapter in diffusers' order of recognition."""
    for key, kind, reads in (("image_proj.proj.weight", "linear", "image_embeds"),
                             ("image_proj.proj.3.weight", "full", "hidden_states"),
                             ("image_proj.perceiver_resampler.proj_in.weight", "faceid-plus", "hidden_states"),
                             ("image_proj.proj.0.weight", "faceid", None),
                             ("image_proj.proj_in.weight", "resampler", "hidden_states")):
        shape = _shape(tensors, key)
        if shape is None or len(shape) != 2:
            continue
        if kind == "full":
            key = "image_proj.proj.0.weight"
            shape = _shape(tensors, key) or shape
        return Projection(kind, reads, shape[1] if reads else None, key)
    return None


def _cross_layers(tensors: dict[str, TensorInfo], suffix: str, dim: int) -> dict[str, int]:
    return {n: i.shape[dim] for n, i in tensors.items() if n.endswith(suffix) and len(i.shape) == 2}


def check_ip_adapter(tensors: dict[str, TensorInfo], base_unet: dict[str, TensorInfo], base_context: int | None,
                     where: str) -> tuple[dict[str, Any], list[Finding]]:
    """(facts, findings) of an IP-Adapter's tensors against the base UNet's tensors."""
    findings: list[Finding] = []
    to_k = _cross_layers(tensors, "to_k_ip.weight", 1)
    layers = {n: tensors[n].shape[0] for n in to_k}
    first = next(iter(sorted(to_k)), None)
    width = to_k[first] if first else None
    base_layers = _cross_layers(base_unet, "attn2.to_q.weight", 1)
    projection = image_projection(tensors)
    facts: dict[str, Any] = {"context_dim": width, "layers": len(to_k),
                             "projection": projection.kind if projection else None,
                             "image_input": projection.reads if projection else None,
                             "image_input_width": projection.width if projection else None}
    if not to_k:
        findings.append(Finding("ip-adapter-mismatch", "error",
                                "no ip_adapter.*.to_k_ip.weight: not an IP-Adapter the UNet loader takes", where))
        return facts, findings
    if base_context is not None and width != base_context:
        findings.append(Finding("ip-adapter-mismatch", "error",
                                f"IP-Adapter cross-attention width {width} ({_describe(tensors, first)}) != base "
                                f"{base_context}", where))
    if base_layers and len(to_k) != len(base_layers):
        findings.append(Finding("ip-adapter-mismatch", "error",
                                f"the IP-Adapter has {len(to_k)} cross-attention layers, the base UNet "
                                f"{len(base_layers)} (attn2 modules)", where))
    elif base_layers and Counter(layers.values()) != Counter(base_layers.values()):
        mine, theirs = sorted(Counter(layers.values()).items()), sorted(Counter(base_layers.values()).items())
        findings.append(Finding("ip-adapter-mismatch", "error",
                                f"IP-Adapter layer widths {_widths(mine)} != the base's cross-attention layers "
                                f"{_widths(theirs)} (to_k_ip.weight rows vs attn2.to_q.weight columns)", where))
    if projection is None:
        findings.append(Finding("ip-adapter-mismatch", "error",
                                "no image projection (image_proj.proj / proj_in / proj.0) in the IP-Adapter", where))
    return facts, findings


def _widths(counts: list[tuple[int, int]]) -> str:
    return ", ".join(f"{n} x {w}" for w, n in counts)


def check_image_encoder(tensors: dict[str, TensorInfo], adapter: dict[str, Any] | None,
                        where: str) -> tuple[dict[str, Any], list[Finding]]:
    """(facts, findings) of a CLIP vision model against what the IP-Adapter's projection reads."""
    names = {n.removeprefix("image_encoder."): i for n, i in tensors.items()}
    hidden_key = next((k for k in ("vision_model.post_layernorm.weight", "vision_model.pre_layrnorm.weight")
                       if k in names), None)
    embeds_key = "visual_projection.weight" if "visual_projection.weight" in names else None
    facts: dict[str, Any] = {"hidden_size": names[hidden_key].shape[0] if hidden_key else None,
                             "projection_dim": names[embeds_key].shape[0] if embeds_key else None}
    findings: list[Finding] = []
    if hidden_key is None:
        findings.append(Finding("image-encoder-mismatch", "error",
                                "no vision_model.post_layernorm.weight: not a CLIP vision model", where))
        return facts, findings
    if not adapter or not adapter.get("image_input"):
        return facts, findings
    reads, wanted = adapter["image_input"], adapter["image_input_width"]
    if reads == "image_embeds":
        if embeds_key is None:
            findings.append(Finding("image-encoder-mismatch", "error",
                                    f"the IP-Adapter reads projected image embeddings ({wanted} wide) but the encoder "
                                    "has no visual_projection (a CLIPVisionModel without projection)", where))
        elif facts["projection_dim"] != wanted:
            findings.append(Finding("image-encoder-mismatch", "error",
                                    f"image embeddings {facts['projection_dim']} wide ({_describe(names, embeds_key)}) "
                                    f"!= the {wanted} the IP-Adapter's {adapter['projection']} projection reads",
                                    where))
    elif facts["hidden_size"] != wanted:
        findings.append(Finding("image-encoder-mismatch", "error",
                                f"hidden states {facts['hidden_size']} wide ({_describe(names, hidden_key)}) != the "
                                f"{wanted} the IP-Adapter's {adapter['projection']} projection reads", where))
    return facts, findings
