"""Is this a text encoder: CLIP-L, OpenCLIP-H, OpenCLIP-bigG (transformers or open_clip names) or
T5-XXL? The type is decided by the layout and the width; the family only when one family uses
that encoder (OpenCLIP-H: SD2) or the checkpoint around it says."""

from __future__ import annotations

from . import catalog
from .base import Context, score, signature_fraction
from .keys import KeyView
from .result import Verdict


def probe_text_encoder(view: KeyView, ctx: Context) -> Verdict | None:
    sigs = catalog.signatures()["text_encoder"]
    wrappers = [""] + catalog.signatures()["checkpoint"]["text_encoder_wrappers"]
    best: Verdict | None = None
    for wrapper in wrappers:
        inner = view.sub(wrapper) if wrapper else view
        if not len(inner):
            continue
        for group, sig in sigs.items():
            fraction, missing = signature_fraction(inner, sig["required"])
            if fraction < 0.66:
                continue
            verdict = _verdict(inner, ctx, group, sig, fraction, missing, coverage_base=len(view))
            if best is None or verdict.score > best.score:
                best = verdict
    return best


def _verdict(view: KeyView, ctx: Context, group: str, sig: dict, fraction: float, missing: list[str],
             coverage_base: int) -> Verdict:
    hidden = view.dim(sig["hidden"], sig.get("hidden_dim", 1))
    layers = view.count(sig["layers"])
    kind_group = "t5" if group == "t5" else "clip"
    type_id = catalog.text_encoder_type(kind_group, hidden)
    evidence = [f"{view.describe(sig['required'][0])}: {'T5' if group == 't5' else 'CLIP'} text encoder "
                f"({sig['layout']} names), width {hidden}, {layers} layers"]
    if missing:
        evidence.append(f"missing keys: {', '.join(view.full(k) for k in missing)}")
    details: dict = {"text_encoder": type_id, "hidden_size": hidden, "layers": layers}
    if group != "t5":
        vocab = view.dim(sig["hidden"], 0)
        details["vocab_size"] = vocab
        details["projection"] = sig.get("projection") in view if sig.get("projection") else False
    if type_id is None:
        evidence.append(f"width {hidden} is not a known diffusion text encoder")
        families: list[str] = []
    else:
        row = catalog.text_encoder_types()[type_id]
        families = list(row["families"])
        evidence.append(f"width {hidden} = {row['name']} (used by {', '.join(families)})")
        if layers and layers not in row["layers"]:
            evidence.append(f"{layers} layers where the released {type_id} has {row['layers']}: a tiny or custom model")
    family = None
    if ctx.parent_family and ctx.parent_family in families:
        family = ctx.parent_family
    elif len(families) == 1:
        family = families[0]
    claimed = view.claimed(sig["claims"]) / coverage_base if coverage_base else 0.0
    return Verdict(
        kind="text_encoder",
        family=family,
        families=[] if family else families,
        layout=sig["layout"],
        score=score(fraction, claimed),
        prober=f"text_encoder:{group}",
        evidence=evidence,
        details=details,
    )
