"""Is this a textual inversion embedding: A1111 (``string_to_param.*``, ``emb_params``), an SDXL
``clip_l``/``clip_g`` pair, or a diffusers ``learned_embeds`` (one tensor named by its token)?
The family comes from the embedding width: 768 SD1, 1024 SD2, 768 + 1280 SDXL."""

from __future__ import annotations

from . import catalog
from .base import Context
from .keys import KeyView
from .result import Verdict


def probe_textual_inversion(view: KeyView, ctx: Context) -> Verdict | None:
    sig = catalog.signatures()["textual_inversion"]
    if not len(view):
        return None
    a1111 = [k for k in view.names() if k.startswith(sig["a1111_prefix"])]
    if a1111:
        return _a1111(view, a1111, sig)
    single = [k for k in sig["single_keys"] if k in view]
    if single and len(view) <= sig["max_tensors"]:
        return _one_table(view, single[0], "a1111", f"{view.full(single[0])}: A1111/kohya embedding table", sig)
    pair = catalog.families()["textual_inversion_pairs"]
    if "clip_l" in view and "clip_g" in view and len(view) == 2:
        return _pair(view, pair, sig)
    if len(view) <= sig["max_tensors"]:
        return _diffusers(view, sig)
    return None


def _vectors(shape: tuple[int, ...] | None) -> tuple[int, int] | None:
    """(vectors, width) of an embedding table shaped [width] or [vectors, width]."""
    if shape is None:
        return None
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    return None


def _family_of(width: int | None) -> str | None:
    return catalog.families()["textual_inversion_dims"].get(str(width))


def _a1111(view: KeyView, params: list[str], sig: dict) -> Verdict | None:
    first = params[0]
    table = _vectors(view.shape(first))
    if table is None:
        return None
    vectors, width = table
    tokens = [k[len(sig["a1111_prefix"]):] for k in params]
    family = _family_of(width)
    evidence = [f"{view.describe(first)}: A1111 textual inversion, {vectors} vector(s) of width {width}"]
    has_token = any(k.startswith(sig["a1111_token_prefix"]) for k in view.names())
    if has_token:
        evidence.append(f"{sig['a1111_token_prefix']}* present (the placeholder token ids)")
    evidence.append(_width_note(width, family))
    claimed = len(params) + sum(1 for k in view.names() if k.startswith(sig["a1111_token_prefix"]))
    return Verdict(
        kind="textual_inversion",
        family=family,
        layout="a1111",
        score=round(0.6 + 0.4 * claimed / len(view), 3),
        prober="textual_inversion:a1111",
        evidence=evidence,
        details={"tokens": tokens, "vectors": vectors, "dim": width},
    )


def _one_table(view: KeyView, key: str, layout: str, note: str, sig: dict) -> Verdict | None:
    table = _vectors(view.shape(key))
    if table is None or table[0] > sig["max_vectors"]:
        return None
    vectors, width = table
    family = _family_of(width)
    return Verdict(
        kind="textual_inversion",
        family=family,
        layout=layout,
        score=round(0.6 + 0.4 / len(view), 3),
        prober="textual_inversion:table",
        evidence=[f"{note}, {vectors} vector(s) of width {width}", _width_note(width, family)],
        details={"tokens": [], "vectors": vectors, "dim": width},
    )


def _pair(view: KeyView, pair: dict, sig: dict) -> Verdict | None:
    left, right = _vectors(view.shape("clip_l")), _vectors(view.shape("clip_g"))
    if left is None or right is None:
        return None
    evidence = [f"{view.describe('clip_l')} + {view.describe('clip_g')}: SDXL embedding pair "
                f"({left[0]} vector(s))"]
    ok = left[1] == pair["clip_l"] and right[1] == pair["clip_g"]
    if ok:
        evidence.append(f"widths {left[1]} + {right[1]} = CLIP-L + OpenCLIP-bigG: {pair['family']}")
    else:
        evidence.append(f"widths {left[1]} + {right[1]} differ from the SDXL encoders "
                        f"({pair['clip_l']} + {pair['clip_g']})")
    return Verdict(
        kind="textual_inversion",
        family=pair["family"] if ok else None,
        layout="kohya",
        score=1.0 if ok else 0.7,
        prober="textual_inversion:pair",
        evidence=evidence,
        details={"tokens": [], "vectors": left[0], "dim": {"clip_l": left[1], "clip_g": right[1]}},
    )


def _diffusers(view: KeyView, sig: dict) -> Verdict | None:
    """One small table per token, named by the token (``<cat-toy>``): diffusers ``learned_embeds``."""
    tables = {k: _vectors(view.shape(k)) for k in view.names()}
    if any(t is None or t[0] > sig["max_vectors"] for t in tables.values()):
        return None
    widths = {t[1] for t in tables.values() if t}
    if len(widths) != 1:
        return None
    width = widths.pop()
    if str(width) not in catalog.families()["textual_inversion_dims"]:
        return None
    vectors = sum(t[0] for t in tables.values() if t)
    family = _family_of(width)
    dotted = any("." in k for k in tables)
    names = ", ".join(view.full(k) for k in tables)
    return Verdict(
        kind="textual_inversion",
        family=family,
        layout="diffusers",
        score=0.6 if dotted else 0.9,
        prober="textual_inversion:diffusers",
        evidence=[f"{names}: {len(tables)} embedding table(s) named by their token, {vectors} vector(s) "
                  f"of width {width} (diffusers learned_embeds)", _width_note(width, family)],
        details={"tokens": list(tables), "vectors": vectors, "dim": width},
    )


def _width_note(width: int | None, family: str | None) -> str:
    if family:
        return f"embedding width {width} = the {family} text encoder"
    return f"embedding width {width} matches no known text encoder"
