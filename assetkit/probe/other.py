"""Models recognised by their names that have no assetkit kind (a CLIP vision encoder, a kohya
ControlNet-LLLite...). The verdict is ``unknown`` on purpose: the evidence says what the file is
and why no kind fits, instead of a wrong kind or family. Signatures: ``signatures.json``
``not_a_kind``."""

from __future__ import annotations

from . import catalog
from .base import Context, score, signature_fraction
from .keys import KeyView
from .result import Verdict


def probe_not_a_kind(view: KeyView, ctx: Context) -> Verdict | None:
    table = catalog.signatures().get("not_a_kind", {})
    best: Verdict | None = None
    for name, sig in table.items():
        if not isinstance(sig, dict):
            continue
        if "required" in sig:
            fraction, _missing = signature_fraction(view, sig["required"])
            if fraction < 1.0:
                continue
            anchor = view.describe(sig["required"][0])
        else:
            present = [p for p in sig["required_prefixes"] if view.has_prefix(p)]
            if len(present) < len(sig["required_prefixes"]):
                continue
            fraction = 1.0
            anchor = f"{view.full(present[0])}* ({view.with_prefix(present[0])} tensors)"
        evidence = [f"{anchor}: {sig['note']}"]
        details: dict = {"model": name}
        width_key = sig.get("width")
        if width_key and width_key in view:
            details["hidden_size"] = view.dim(width_key, 0)
            evidence.append(f"{view.describe(width_key)}: width {details['hidden_size']}")
        # Below any real kind's full match: this only wins where nothing else fits.
        verdict = Verdict(kind="unknown", family=None, layout=None,
                          score=round(0.5 * score(fraction, view.coverage(sig["claims"])), 3),
                          prober=f"not_a_kind:{name}", evidence=evidence, details=details)
        if best is None or verdict.score > best.score:
            best = verdict
    return best
