"""Is this a LoRA (kohya, PEFT, old diffusers, diffusers attention processors) or a LyCORIS network
(LoCon, LoHa, LoKr, full diff)? With rank, alpha, algorithm, the models it targets and the family
those targets belong to (from module names and the widths they take)."""

from __future__ import annotations

import functools
import re
import struct
from collections import Counter
from dataclasses import dataclass, field

from . import catalog
from .base import Context, score
from .keys import KeyView
from .result import Verdict


@dataclass
class _Module:
    name: str
    roles: dict[str, tuple[int, ...]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  #: role -> relative key
    layouts: set[str] = field(default_factory=set)


_UNET_TOKENS = ("attentions", "input_blocks", "output_blocks", "middle_block", "mid_block")


@functools.cache
def _suffix_matcher() -> tuple[re.Pattern[str], dict[str, tuple[str | None, str]]]:
    """The catalogue's LoRA key suffixes as one anchored pattern over the reversed key, longest
    first: one C-level match per key instead of an ``endswith`` per suffix (a 2,500-tensor
    checkpoint is probed by this prober too)."""
    table = {sfx: (lay, role) for sfx, (lay, role) in catalog.signatures()["lora"]["suffixes"].items()}
    ordered = sorted(table, key=len, reverse=True)
    return re.compile("|".join(re.escape(sfx[::-1]) for sfx in ordered)), table


def lora_suffix(key: str) -> tuple[str, str | None, str] | None:
    """(suffix, layout, role) for the longest catalogue LoRA suffix ``key`` ends with, else None."""
    pattern, table = _suffix_matcher()
    hit = pattern.match(key[::-1])
    if hit is None:
        return None
    sfx = hit.group()[::-1]
    return (sfx, *table[sfx])


def probe_lora(view: KeyView, ctx: Context) -> Verdict | None:
    if not len(view):
        return None
    modules: dict[str, _Module] = {}
    explained = 0
    for key in view.names():
        found = lora_suffix(key)
        if found is None:
            continue
        sfx, layout, role = found
        name = key[: -len(sfx)]
        module = modules.setdefault(name, _Module(name))
        module.roles[role] = view.shape(key) or ()
        module.keys[role] = key
        if layout:
            module.layouts.add(layout)
        explained += 1
    real = [m for m in modules.values() if m.layouts]
    if not real:
        return None
    return _verdict(view, ctx, real, explained)


def _verdict(view: KeyView, ctx: Context, modules: list[_Module], explained: int) -> Verdict:
    sig = catalog.signatures()["lora"]
    layout_counts = Counter(lay for m in modules for lay in m.layouts)
    evidence: list[str] = []
    example = modules[0]
    example_key = next(iter(example.keys.values()))
    algo, algo_note = _algorithm(modules)
    layout = _layout(layout_counts, algo, ctx)
    evidence.append(f"{view.full(example_key)}: {layout} {algo} key naming "
                    f"({len(modules)} adapted modules, {explained} of {len(view)} tensors)")
    if algo_note:
        evidence.append(algo_note)
    details: dict = {"algo": algo, "modules": len(modules)}
    ranks, conv_ranks = _ranks(modules)
    if ranks:
        rank, _ = ranks.most_common(1)[0]
        details["rank"] = rank
        if len(ranks) > 1:
            details["ranks"] = sorted(ranks)
        evidence.append(f"rank {rank} from the down-projection shapes"
                        + (f" (ranks {sorted(ranks)} in use)" if len(ranks) > 1 else ""))
    else:
        details["rank"] = None
    if conv_ranks:
        details["conv_rank"] = conv_ranks.most_common(1)[0][0]
    alpha, alpha_note, alpha_source = _alpha(view, modules, ctx)
    details["alpha"] = alpha
    details["alpha_source"] = alpha_source
    if alpha_note:
        evidence.append(alpha_note)
    if any("dora" in m.roles for m in modules):
        details["dora"] = True
        evidence.append("DoRA magnitude vectors present (weight-decomposed LoRA)")
    targets = _targets(modules, sig["targets"])
    family, families, family_notes = _family(modules, targets, sig)
    evidence.extend(family_notes)
    if family in ("sd3", "flux") and "unet" in targets:
        targets["transformer"] = targets.pop("unet") + targets.get("transformer", 0)
    details["targets"] = sorted(targets)
    details["target_modules"] = dict(sorted(targets.items()))
    coverage = explained / len(view)
    return Verdict(
        kind="lora",
        family=family,
        families=[] if family else families,
        layout=layout,
        score=score(1.0 if ranks or algo != "lora" else 0.7, coverage),
        prober="lora",
        evidence=evidence,
        details=details,
    )


def _algorithm(modules: list[_Module]) -> tuple[str, str | None]:
    roles = {role for m in modules for role in m.roles}
    if any(role.startswith("hada_") for role in roles):
        return "loha", "hada_w1_a/hada_w1_b/hada_w2_a/hada_w2_b: LyCORIS LoHa (Hadamard product)"
    if any(role.startswith("lokr_") for role in roles):
        return "lokr", "lokr_w1/lokr_w2: LyCORIS LoKr (Kronecker product)"
    if "full" in roles:
        return "full", ".diff tensors: LyCORIS full-weight difference"
    conv = [m for m in modules if len(m.roles.get("down", ())) == 4 and m.roles["down"][2:] != (1, 1)]
    if conv:
        return "locon", (f"{conv[0].keys['down']} {list(conv[0].roles['down'])}: LoRA on "
                         f"{len(conv)} convolution layer(s) (LoCon)")
    return "lora", None


def _layout(counts: Counter, algo: str, ctx: Context) -> str:
    claimed = ctx.claims.get("layout")
    if counts.get("lycoris") or algo in ("loha", "lokr", "full"):
        return "lycoris"
    if claimed and claimed.value == "lycoris":
        return "lycoris"
    layout = counts.most_common(1)[0][0]
    if algo == "locon" and layout == "kohya" and not (claimed and claimed.value == "kohya"):
        return "lycoris"
    return layout


def _ranks(modules: list[_Module]) -> tuple[Counter, Counter]:
    ranks: Counter = Counter()
    conv: Counter = Counter()
    for m in modules:
        rank = None
        down = m.roles.get("down")
        if down:
            rank = down[0]
        elif m.roles.get("hada_w1_b"):
            rank = m.roles["hada_w1_b"][0]
        elif m.roles.get("lokr_w2_b"):
            rank = m.roles["lokr_w2_b"][0]
        if rank is None:
            continue
        if down and len(down) == 4 and down[2:] != (1, 1):
            conv[rank] += 1
        else:
            ranks[rank] += 1
    if not ranks and conv:
        ranks = conv.copy()
    return ranks, conv


def _alpha(view: KeyView, modules: list[_Module], ctx: Context) -> tuple[float | None, str | None, str | None]:
    """(alpha, evidence, source): from the 0-dim ``.alpha`` tensors (a few bytes each), else metadata."""
    alpha_keys = [m.keys["alpha"] for m in modules if "alpha" in m.keys]
    values: Counter = Counter()
    if alpha_keys and ctx.scalar is not None:
        for key in alpha_keys[:4096]:
            value = ctx.scalar(view.full(key))
            if value is not None:
                values[round(value, 6)] += 1
    claimed = ctx.claims.get("alpha")
    if values:
        alpha = values.most_common(1)[0][0]
        note = f"alpha {alpha:g} read from {sum(values.values())} scalar .alpha tensor(s)"
        if len(values) > 1:
            note += f" (values {sorted(values)})"
        return alpha, note, "tensors"
    if claimed:
        return claimed.value, f"alpha {claimed.value:g} from metadata {claimed.describe()}", "metadata"
    if alpha_keys:
        return None, f"{len(alpha_keys)} .alpha tensor(s) present but not readable in place", None
    return None, "no alpha stored (loaders then use alpha = rank)", None


def _targets(modules: list[_Module], table: list[list[str]]) -> Counter:
    counts: Counter = Counter()
    for m in modules:
        target = None
        for prefix, name in table:
            if m.name.startswith(prefix):
                target = name
                rest = m.name[len(prefix):]
                if name == "model":  # PEFT ``base_model.model.``: look at what follows
                    target = _guess_target(rest)
                break
        counts[target or _guess_target(m.name)] += 1
    return counts


def _guess_target(name: str) -> str:
    flat = name.replace(".", "_")
    if "text_model" in flat or "encoder_layers" in flat or "encoder_block" in flat:
        return "text_encoder"
    if any(t in flat for t in ("double_blocks", "single_blocks", "joint_blocks", "transformer_blocks_0_attn_add",
                               "single_transformer_blocks")):
        return "transformer"
    if any(t in flat for t in ("down_blocks", "up_blocks", "mid_block", "input_blocks", "output_blocks",
                               "middle_block")):
        return "unet"
    if "transformer_blocks" in flat:
        return "transformer"
    return "unknown"


def _family(modules: list[_Module], targets: Counter, sig: dict) -> tuple[str | None, list[str], list[str]]:
    """Vote for a family from names and widths; strong votes weigh more."""
    votes: Counter = Counter()
    notes: list[str] = []
    flat_names = [m.name.replace(".", "_") for m in modules]
    for token, family in sig["family_tokens"].items():
        hit = next((n for n in flat_names if f"_{token}_" in f"_{n}_"), None)
        if hit:
            votes[family] += 3
            notes.append(f"module names with '{token}' ({hit}): {family}")
            break
    context = _widths(modules, lambda n: "attn2" in n and ("to_k" in n or "to_v" in n))
    if context:
        width = context.most_common(1)[0][0]
        fams = catalog.families_by_context_dim(width)
        if fams:
            for fam in fams:
                votes[fam] += 3 / len(fams)
            notes.append(f"cross-attention LoRA input width {width}: {', '.join(fams)}")
    has_te2 = bool(targets.get("text_encoder_2"))
    has_te3 = bool(targets.get("text_encoder_3"))
    if has_te2 and not has_te3 and not votes.get("sd3"):
        votes["sdxl"] += 2
        notes.append("second text encoder targeted (lora_te2_/text_encoder_2): sdxl")
    te_width = _widths(modules, lambda n: ("text_model" in n or n.startswith(("lora_te", "text_encoder")))
                       and ("q_proj" in n or "k_proj" in n))
    if te_width:
        width = te_width.most_common(1)[0][0]
        if width == 1024:
            votes["sd2"] += 2
            notes.append("text-encoder LoRA width 1024 (OpenCLIP-H): sd2")
        elif width == 768 and not has_te2 and not has_te3 and not votes.get("flux") and not votes.get("sd3"):
            votes["sd1"] += 1
            notes.append("text-encoder LoRA width 768 (CLIP-L) and no second encoder: sd1")
    hidden = _widths(modules, lambda n: "transformer_blocks" in n and ("to_q" in n or "add_q_proj" in n)
                     and not any(t in n for t in _UNET_TOKENS))
    if hidden and not votes.get("flux") and not votes.get("sd3"):
        width = hidden.most_common(1)[0][0]
        for fam, row in catalog.family_table().items():
            if str(width) in row.get("transformer_hidden_sizes", {}):
                votes[fam] += 3
                notes.append(f"transformer attention LoRA width {width}: {fam}")
    names = "\n".join(flat_names)
    if any(marker.replace(".", "_") in names for marker in sig["sdxl_unet_markers"]):
        votes["sdxl"] += 1
        notes.append("two transformer blocks per attention at the second UNet level: sdxl layout")
    if not votes:
        return None, [], ["no module name or width tells the target family"]
    ranked = votes.most_common()
    top = ranked[0][1]
    leaders = [fam for fam, weight in ranked if weight == top]
    if len(leaders) == 1:
        return leaders[0], [], notes
    notes.append(f"target family ambiguous between {', '.join(leaders)}")
    return None, leaders, notes


def _widths(modules: list[_Module], predicate) -> Counter:
    """Input widths of the adapted layers whose flat module name passes ``predicate``."""
    out: Counter = Counter()
    for m in modules:
        flat = m.name.replace(".", "_") + "_" + m.name
        if not predicate(flat):
            continue
        width = input_width(m.roles)
        if width:
            out[width] += 1
    return out


def input_width(roles: dict[str, tuple[int, ...]]) -> int | None:
    """The input width of the adapted layer: down projection, LoHa ``w1_b``, or LoKr kron factors."""
    down = roles.get("down") or roles.get("hada_w1_b")
    if down and len(down) >= 2:
        return down[1]
    w1 = roles.get("lokr_w1") or roles.get("lokr_w1_b")
    w2 = roles.get("lokr_w2") or roles.get("lokr_w2_b")
    if w1 and w2 and len(w1) >= 2 and len(w2) >= 2:
        return w1[1] * w2[1]
    return None


def decode_scalar(dtype: str, raw: bytes) -> float | None:
    """The value of a one-element float tensor from its little-endian bytes."""
    try:
        if dtype == "F32" and len(raw) == 4:
            return struct.unpack("<f", raw)[0]
        if dtype == "F16" and len(raw) == 2:
            return struct.unpack("<e", raw)[0]
        if dtype == "BF16" and len(raw) == 2:
            return struct.unpack("<f", b"\x00\x00" + raw)[0]
        if dtype == "F64" and len(raw) == 8:
            return struct.unpack("<d", raw)[0]
    except struct.error:
        return None
    return None
