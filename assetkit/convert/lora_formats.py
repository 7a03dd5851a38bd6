"""LoRA formats: kohya (``lora_unet_*`` / ``lora_te*_*`` with ``lora_down``/``lora_up``/``alpha``) <->
the peft naming that diffusers' ``load_lora_weights`` reads (``unet.<module>.lora_A.weight``).

Nothing is folded: tensor bytes are copied as they are, alpha travels as peft ``lora_alpha`` plus
per-module ``rank_pattern``/``alpha_pattern`` in the ``lora_adapter_metadata`` header entry that
diffusers reads (and back as kohya's scalar ``.alpha`` tensors, in their original dtype). Mixed
ranks stay per module, DoRA magnitudes (kohya/LyCORIS ``dora_scale``, peft
``lora_magnitude_vector``) are carried. Algorithms peft cannot represent (LoHa, LoKr, Tucker
``lora_mid``, full diffs...) are refused by name.

Module names are looked up, never guessed: the UNet and text-encoder rule modules
(:mod:`assetkit.convert.layouts`) give every module of the target model for its config, in
diffusers and in original (SGM ``input_blocks``) spelling, so a kohya name either matches one
module exactly or is reported. What peft has no place for but kohya needs on the way back (the
UNet spelling, the text-encoder prefix, alpha dtypes, tensor order) is kept in the
``assetkit.lora.kohya`` header entry, so kohya -> peft -> kohya is byte-identical.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AssetkitError, VerificationError
from ..findings import capped

#: ``--to`` values.
TARGETS = ("diffusers", "kohya")
#: The header entry diffusers reads peft LoRA configs from (component-prefixed keys).
PEFT_METADATA_KEY = "lora_adapter_metadata"
#: Our record of what peft has no place for (only needed on the way back to kohya).
KOHYA_RECORD_KEY = "assetkit.lora.kohya"
#: kohya module-name prefixes -> diffusers component (longest first).
KOHYA_COMPONENTS = (("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"),
                    ("lora_te_", "text_encoder"))
#: diffusers component -> kohya prefix, for one text encoder (SD1/SD2) and for two (SDXL).
KOHYA_PREFIX_ONE_TE = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
KOHYA_PREFIX_TWO_TE = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
#: Tensor suffix after the module name -> role, per format.
KOHYA_ROLES = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha", "dora_scale": "dora"}
PEFT_ROLES = {"lora_A.weight": "down", "lora_B.weight": "up", "lora_magnitude_vector": "dora"}
#: Suffixes of algorithms that peft's LoRA cannot represent -> the name users know them by.
REFUSED_ALGORITHMS = {
    "hada_w1_a": "LoHa (LyCORIS Hadamard product)", "hada_w1_b": "LoHa (LyCORIS Hadamard product)",
    "hada_w2_a": "LoHa (LyCORIS Hadamard product)", "hada_w2_b": "LoHa (LyCORIS Hadamard product)",
    "hada_t1": "LoHa (LyCORIS Hadamard product)", "lokr_w1": "LoKr (LyCORIS Kronecker product)",
    "lokr_w1_a": "LoKr (LyCORIS Kronecker product)", "lokr_w2": "LoKr (LyCORIS Kronecker product)",
    "lokr_w2_a": "LoKr (LyCORIS Kronecker product)", "lokr_w2_b": "LoKr (LyCORIS Kronecker product)",
    "lokr_t2": "LoKr (LyCORIS Kronecker product)", "lora_mid.weight": "LoCon with Tucker decomposition (lora_mid)",
    "diff": "full weight difference (LyCORIS full)", "diff_b": "full weight difference (LyCORIS full)",
    "oft_blocks": "OFT (orthogonal fine-tuning)", "oft_diag": "OFT (orthogonal fine-tuning)",
    "a1.weight": "GLoRA", "b1.weight": "GLoRA", "w_norm": "norm-layer training (LyCORIS)",
    "b_norm": "norm-layer training (LyCORIS)", "on_input": "(IA)^3", "lora_B.bias": "LoRA with bias (lora_bias)",
    "lora_embedding_A": "embedding LoRA", "lora.down.weight": "old diffusers LoRA (lora.down/lora.up)",
    "lora_A.default.weight": "peft names with an adapter name (lora_A.default: a model's state dict, not a saved LoRA)",
    "lora_up.bias": "LoRA with bias (lora_up.bias)", "lora_down.bias": "LoRA with bias (lora_down.bias)",
}
_WEIGHT_SUFFIXES = (".weight", ".bias")


# ---------------------------------------------------------------------------------------------
# Module catalogues: every adaptable module of a component, in each spelling
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleNames:
    """The modules of one component: flat (kohya) spelling -> (diffusers module path, spelling)."""

    by_flat: dict[str, tuple[str, str]]
    to_original: dict[str, str]  #: diffusers module path -> original (SGM) module path

    def lookup(self, flat: str) -> tuple[str, str] | None:
        return self.by_flat.get(flat)


def _module(name: str) -> str:
    for suffix in _WEIGHT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _flat(path: str) -> str:
    return path.replace(".", "_")


def unet_module_names(config: dict[str, Any]) -> ModuleNames:
    """Every UNet module, by its diffusers and by its original (SGM ``input_blocks``) kohya spelling."""
    from .layouts import unet_rules

    by_flat: dict[str, tuple[str, str]] = {}
    to_original: dict[str, str] = {}
    for rule in unet_rules(config):
        if len(rule.original) != 1 or len(rule.diffusers) != 1:
            continue
        original, diffusers = _module(rule.original[0]), _module(rule.diffusers[0])
        to_original[diffusers] = original
        by_flat[_flat(diffusers)] = (diffusers, "diffusers")
        by_flat.setdefault(_flat(original), (diffusers, "sgm"))
    return ModuleNames(by_flat, to_original)


def text_encoder_module_names(config: dict[str, Any]) -> ModuleNames:
    """Every CLIP text-encoder module (transformers names, with ``text_model.``)."""
    from .layouts import clip_text_rules

    by_flat: dict[str, tuple[str, str]] = {}
    for rule in clip_text_rules(config, target_prefix="text_model."):  # kohya's own names hold text_model.
        path = _module(rule.diffusers[0])
        by_flat[_flat(path)] = (path, "transformers")
        # LoRAs written from transformers 5 modules (no text_model. level) drop it; diffusers reads both
        by_flat.setdefault(_flat(path.removeprefix("text_model.")), (path, "bare"))
    return ModuleNames(by_flat, {})


def load_configs(config: str | os.PathLike[str] | None, family: str | None) -> dict[str, dict[str, Any]]:
    """Component -> config dict: from a diffusers folder (``config``) or the catalogue's family configs."""
    components = ("unet", "text_encoder", "text_encoder_2")
    found: dict[str, dict[str, Any]] = {}
    if config is not None:
        root = Path(config)
        if not root.is_dir():
            raise AssetkitError("--config: no such folder" if not root.exists() else "--config needs a folder",
                                where=str(root))
        if (root / "config.json").is_file() and not (root / "model_index.json").is_file():
            raise AssetkitError("--config needs a pipeline folder (with unet/config.json...), not one component",
                                where=str(root))
        for name in components:
            path = root / name / "config.json"
            if path.is_file():
                try:
                    found[name] = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise AssetkitError(f"cannot read config: {exc}", where=str(path)) from None
        if not found:
            raise AssetkitError("no unet/ or text_encoder/ config.json found", where=str(root))
        return found
    if family is None:
        raise AssetkitError("cannot tell which model family this LoRA is for: give --family (sd1, sd2, sdxl) "
                            "or --config DIR")
    from .. import catalogue

    folder = catalogue.catalogue_dir() / "configs" / family
    if not folder.is_dir():
        raise AssetkitError(f"no LoRA key map for family {family!r}: sd1, sd2 and sdxl are known")
    for name in components:
        if (folder / name / "config.json").is_file():
            found[name] = catalogue.load(f"configs/{family}/{name}/config.json")
    return found


def component_names(configs: dict[str, dict[str, Any]]) -> dict[str, ModuleNames]:
    out: dict[str, ModuleNames] = {}
    for name, cfg in configs.items():
        out[name] = unet_module_names(cfg) if name == "unet" else text_encoder_module_names(cfg)
    return out


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------
@dataclass
class LoraModule:
    """One adapted module: where it lives in diffusers, and its tensors by role."""

    component: str
    path: str  #: diffusers module path inside the component (transformers name for text encoders)
    tensors: dict[str, str] = field(default_factory=dict)  #: role -> source tensor name
    kohya_name: str = ""
    spelling: str = ""
    rank: int = 0
    alpha: float | None = None


def _check_algorithms(names: list[str], where: str) -> None:
    hits: dict[str, str] = {}
    for name in names:
        for known, algorithm in REFUSED_ALGORITHMS.items():
            if name.endswith("." + known):
                hits.setdefault(algorithm, name)
    if hits:
        algorithm, example = next(iter(hits.items()))
        raise AssetkitError(f"not a plain LoRA: {algorithm}, e.g. {example}; LoRA format conversion carries "
                            "plain LoRA (and DoRA) only: the target format cannot represent it", where=where)


def detect_format(names: list[str]) -> str:
    """``kohya``, ``peft`` or ``unknown`` from the tensor names: a LoRA when at least half its
    tensors have LoRA names (a full checkpoint with a stray ``lora_*`` key left by a merge, junk
    that ``inspect`` reports, is not a LoRA)."""
    kohya = sum(1 for n in names if n.startswith(("lora_unet_", "lora_te")) and "." in n)
    peft = sum(1 for n in names if n.endswith((".lora_A.weight", ".lora_B.weight")))
    if kohya and 2 * kohya >= len(names):
        return "kohya"
    if peft and 2 * peft >= len(names):
        return "peft"
    return "unknown"


def names_format(path: str | os.PathLike[str]) -> str:
    """:func:`detect_format` of a safetensors file's tensor names (header only); ``unknown`` for
    anything else, including files that cannot be read (the conversion then reports why)."""
    from ..formats import open_asset

    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".safetensors":
        return "unknown"
    try:
        with open_asset(p) as asset:
            return detect_format(list(asset.tensors))
    except AssetkitError:
        return "unknown"


def parse_kohya(names: list[str], where: str) -> list[LoraModule]:
    modules: dict[str, LoraModule] = {}
    unknown: list[str] = []
    for name in names:
        module, _, suffix = name.partition(".")
        role = KOHYA_ROLES.get(suffix)
        component = next((c for p, c in KOHYA_COMPONENTS if module.startswith(p)), None)
        if role is None or component is None:
            unknown.append(name)
            continue
        entry = modules.setdefault(module, LoraModule(component, "", kohya_name=module))
        entry.tensors[role] = name
    if unknown:
        raise AssetkitError(f"{len(unknown)} tensor name(s) are not kohya LoRA names: {capped(unknown, 3)}",
                            where=where)
    return list(modules.values())


def parse_peft(names: list[str], where: str) -> list[LoraModule]:
    modules: dict[tuple[str, str], LoraModule] = {}
    unknown: list[str] = []
    components = ("unet.", "text_encoder_2.", "text_encoder.")
    for name in names:
        component = next((c[:-1] for c in components if name.startswith(c)), None)
        role = next(((r, s) for s, r in PEFT_ROLES.items() if name.endswith("." + s)), None)
        if component is None or role is None:
            unknown.append(name)
            continue
        path = name[len(component) + 1: -len(role[1]) - 1]
        entry = modules.setdefault((component, path), LoraModule(component, path))
        entry.tensors[role[0]] = name
    if unknown:
        raise AssetkitError(f"{len(unknown)} tensor name(s) are not peft LoRA names for a UNet/text encoder "
                            f"(unet./text_encoder./text_encoder_2. + lora_A/lora_B): {', '.join(unknown[:3])}",
                            where=where)
    return list(modules.values())


def _read_scalar(asset: Any, name: str) -> float:
    info = asset.tensors[name]
    if info.numel != 1:
        raise AssetkitError(f"alpha tensor has {info.numel} elements, expected one", where=name)
    raw = bytes(asset.tensor_bytes(name))
    formats = {"F32": "<f", "F16": "<e", "F64": "<d"}
    if info.dtype == "BF16":
        value = struct.unpack("<f", b"\x00\x00" + raw)[0]
    elif info.dtype in formats:
        value = struct.unpack(formats[info.dtype], raw)[0]
    elif info.dtype in ("I64", "I32", "I16", "I8", "U8"):
        value = float(int.from_bytes(raw, "little", signed=info.dtype != "U8"))
    else:
        raise AssetkitError(f"alpha stored as {info.dtype}: not a number type", where=name)
    if not math.isfinite(value):
        raise AssetkitError(f"alpha is {value}", where=name)
    return value


def _scalar_bytes(value: float, dtype: str) -> bytes:
    formats = {"F32": "<f", "F16": "<e", "F64": "<d"}
    if dtype == "BF16":
        bits = struct.unpack("<I", struct.pack("<f", value))[0]
        if bits & 0xFFFF:
            raise AssetkitError(f"alpha {value!r} is not a bfloat16 value")
        return struct.pack("<H", bits >> 16)
    if dtype in formats:
        packed = struct.pack(formats[dtype], value)
        if struct.unpack(formats[dtype], packed)[0] != value:
            raise AssetkitError(f"alpha {value!r} cannot be stored exactly as {dtype}")
        return packed
    if dtype in ("I64", "I32", "I16", "I8", "U8"):
        size = {"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}[dtype]
        if value != int(value):
            raise AssetkitError(f"alpha {value!r} cannot be stored exactly as {dtype}")
        return int(value).to_bytes(size, "little", signed=dtype != "U8")
    raise AssetkitError(f"cannot store alpha as {dtype}")


# ---------------------------------------------------------------------------------------------
# peft config entries (what diffusers' LoraConfig is built from)
# ---------------------------------------------------------------------------------------------
def _config_paths(path: str) -> str:
    """Module path as peft patterns match it: text encoders without ``text_model.`` (a suffix of the
    module name whichever naming the installed transformers uses)."""
    return path.removeprefix("text_model.")


def peft_config_entries(modules: list[LoraModule]) -> dict[str, Any]:
    """``<component>.r``, ``.lora_alpha``, ``.rank_pattern``, ``.alpha_pattern``, ``.target_modules``,
    ``.use_dora``, ``.lora_bias`` for each component (the keys diffusers' ``save_lora_weights`` writes)."""
    entries: dict[str, Any] = {}
    for component in sorted({m.component for m in modules}):
        own = [m for m in modules if m.component == component]
        ranks = Counter(m.rank for m in own)
        r = ranks.most_common(1)[0][0]
        alphas = Counter(m.alpha for m in own)
        lora_alpha = alphas.most_common(1)[0][0]
        entries[f"{component}.r"] = r
        entries[f"{component}.lora_alpha"] = lora_alpha
        entries[f"{component}.rank_pattern"] = {_config_paths(m.path): m.rank for m in own if m.rank != r}
        entries[f"{component}.alpha_pattern"] = {_config_paths(m.path): m.alpha for m in own
                                                 if m.alpha != lora_alpha}
        entries[f"{component}.target_modules"] = sorted(_config_paths(m.path) for m in own)
        entries[f"{component}.use_dora"] = any("dora" in m.tensors for m in own)
        entries[f"{component}.lora_bias"] = False
    return entries


def _pattern_value(patterns: dict[str, Any], path: str) -> Any:
    """peft's own rule: the first pattern ``key`` with ``(.*\\.)?key$`` matching the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return None


def alphas_from_metadata(modules: list[LoraModule], metadata: dict[str, str], where: str) -> None:
    """Set each module's alpha from the peft config entries (diffusers' rule when there are none:
    alpha = rank, scale 1)."""
    raw = metadata.get(PEFT_METADATA_KEY)
    entries: dict[str, Any] = {}
    if raw:
        try:
            entries = json.loads(raw)
        except ValueError:
            raise AssetkitError(f"header entry {PEFT_METADATA_KEY!r} is not JSON", where=where) from None
    for m in modules:
        if f"{m.component}.r" not in entries:
            m.alpha = float(m.rank)
            continue
        path = _config_paths(m.path)
        alpha = _pattern_value(entries.get(f"{m.component}.alpha_pattern") or {}, path)
        m.alpha = float(alpha if alpha is not None else entries.get(f"{m.component}.lora_alpha", m.rank))


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
@dataclass
class LoraConvertReport:
    src: Path
    dst: Path
    source_format: str
    target_format: str
    modules: dict[str, int] = field(default_factory=dict)  #: component -> adapted modules
    ranks: dict[int, int] = field(default_factory=dict)
    alphas: dict[float, int] = field(default_factory=dict)
    dora: bool = False
    unet_spelling: str | None = None
    tensors: int = 0
    verified: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"src": str(self.src), "dst": str(self.dst), "source_format": self.source_format,
                "target_format": self.target_format, "modules": dict(self.modules),
                "ranks": {str(k): v for k, v in sorted(self.ranks.items())},
                "alphas": {repr(k): v for k, v in sorted(self.alphas.items())}, "dora": self.dora,
                "unet_spelling": self.unet_spelling, "tensors": self.tensors, "verified": self.verified,
                "seconds": round(self.seconds, 3)}


@dataclass
class _Out:
    name: str
    dtype: str
    shape: tuple[int, ...]
    source: str | None = None  #: source tensor whose bytes are copied
    data: bytes | None = None  #: or these bytes


# ---------------------------------------------------------------------------------------------
# Resolution of names
# ---------------------------------------------------------------------------------------------
def _family(asset: Any) -> str | None:
    from ..probe import probe

    result = probe(asset)
    return result.family if result.kind == "lora" else None


def _resolve_kohya(modules: list[LoraModule], names: dict[str, ModuleNames], where: str) -> None:
    unmatched: list[str] = []
    for m in modules:
        prefix = next(p for p, c in KOHYA_COMPONENTS if m.kohya_name.startswith(p))
        catalogue = names.get(m.component)
        hit = catalogue.lookup(m.kohya_name[len(prefix):]) if catalogue else None
        if hit is None:
            unmatched.append(m.kohya_name)
            continue
        m.path, m.spelling = hit
    if unmatched:
        raise AssetkitError(f"{len(unmatched)} kohya module name(s) match no module of the target model "
                            f"({', '.join(sorted(names))} config): {capped(unmatched, 3)}; give the right "
                            "--family or --config DIR", where=where)


def module_weight_shapes(folder: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """``component.module path`` -> weight shape, from the headers of a diffusers folder's UNet and
    text-encoder weights (read as the folder reader reads them: plain weights, shards; text encoders
    under ``text_model.``). Empty when the folder holds configs only or cannot be read."""
    from ..formats import open_asset

    shapes: dict[str, tuple[int, ...]] = {}
    try:
        asset = open_asset(Path(folder))
    except AssetkitError:
        return shapes  # an unreadable folder: validate reports it; the names still decide
    with asset:
        for name, info in asset.tensors.items():
            component, _, path = name.partition("/")
            if component not in ("unet", "text_encoder", "text_encoder_2") or not path.endswith(".weight"):
                continue
            path = path[: -len(".weight")]
            if component != "unet" and not path.startswith("text_model."):
                path = "text_model." + path
            shapes[f"{component}.{path}"] = tuple(info.shape)
    return shapes


def _check_widths(modules: list[LoraModule], asset: Any, widths: dict[str, tuple[int, ...]] | None,
                  where: str) -> None:
    """Each module's down/up widths against the weight it adapts, when ``--config`` has weights
    (a LoRA for another width would otherwise convert, verify, and fail inside diffusers)."""
    if not widths:
        return
    wrong = []
    for m in modules:
        shape = widths.get(f"{m.component}.{m.path}")
        if shape is None or len(shape) < 2 or "down" not in m.tensors or "up" not in m.tensors:
            continue
        down, up = asset.tensors[m.tensors["down"]].shape, asset.tensors[m.tensors["up"]].shape
        if len(down) < 2 or len(up) < 2 or down[1] != shape[1] or up[0] != shape[0]:
            wrong.append(f"{m.kohya_name or m.path} (down {list(down)}, up {list(up)}; the layer is {list(shape)})")
    if wrong:
        raise AssetkitError(f"{len(wrong)} module(s) do not fit the widths of the --config model: "
                            f"{capped(wrong, 2)}", where=where)


def _check_module(m: LoraModule, asset: Any, where: str) -> None:
    missing = [r for r in ("down", "up") if r not in m.tensors]
    if missing:
        raise AssetkitError(f"module {m.kohya_name or m.path} has no {' / '.join(missing)} weight", where=where)
    down = asset.tensors[m.tensors["down"]].shape
    up = asset.tensors[m.tensors["up"]].shape
    if len(down) < 2 or len(up) < 2 or down[0] != up[1]:
        raise AssetkitError(f"module {m.kohya_name or m.path}: down {list(down)} and up {list(up)} do not "
                            "form a low-rank pair", where=where)
    m.rank = int(down[0])


# ---------------------------------------------------------------------------------------------
# The two directions
# ---------------------------------------------------------------------------------------------
def _kohya_to_peft(asset: Any, names: list[str], configs: dict, report: LoraConvertReport,
                   where: str, widths: dict[str, tuple[int, ...]] | None = None) -> tuple[list[_Out], dict[str, str]]:
    modules = parse_kohya(names, where)
    _resolve_kohya(modules, component_names(configs), where)
    _check_widths(modules, asset, widths, where)
    record: dict[str, Any] = {}
    spellings = {m.spelling for m in modules if m.component == "unet"}
    if len(spellings) > 1:
        raise AssetkitError("the UNet module names mix the diffusers and the SGM (input_blocks) spelling",
                            where=where)
    if spellings:
        record["unet"] = spellings.pop()
        report.unet_spelling = record["unet"]
    text_spellings = {m.spelling for m in modules if m.component != "unet"}
    if len(text_spellings) > 1:
        raise AssetkitError("the text-encoder module names mix lora_te_text_model_* and lora_te_encoder_* "
                            "(with and without text_model)", where=where)
    if text_spellings == {"bare"}:
        record["text_model"] = False  # the way back writes them without text_model. again
    record["prefixes"] = {m.component: next(p for p, c in KOHYA_COMPONENTS if m.kohya_name.startswith(p))
                          for m in modules}
    alpha_dtypes: Counter = Counter()
    no_alpha: list[int] = []
    by_source: dict[str, tuple[int, LoraModule, str]] = {}
    for index, m in enumerate(modules):
        _check_module(m, asset, where)
        if "alpha" in m.tensors:
            m.alpha = _read_scalar(asset, m.tensors["alpha"])
            alpha_dtypes[asset.tensors[m.tensors["alpha"]].dtype] += 1
        else:
            m.alpha = float(m.rank)  # kohya's rule for a module saved without alpha
            no_alpha.append(index)
        for role, name in m.tensors.items():
            by_source[name] = (index, m, role)
    dtype = alpha_dtypes.most_common(1)[0][0] if alpha_dtypes else None
    record["alpha_dtype"] = dtype
    odd = {str(i): asset.tensors[m.tensors["alpha"]].dtype for i, m in enumerate(modules)
           if "alpha" in m.tensors and asset.tensors[m.tensors["alpha"]].dtype != dtype}
    if odd:
        record["alpha_dtypes"] = odd
    if no_alpha:
        record["no_alpha"] = no_alpha
    outputs: list[_Out] = []
    dora_shapes: dict[str, list[int]] = {}
    suffix = {"down": "lora_A.weight", "up": "lora_B.weight", "dora": "lora_magnitude_vector"}
    for name in names:  # source order, alphas left out (they become config entries)
        index, m, role = by_source[name]
        if role == "alpha":
            continue
        info = asset.tensors[name]
        shape = tuple(info.shape)
        if role == "dora":
            shape = _peft_dora_shape(m, asset, shape, where)
            if tuple(info.shape) != _kohya_dora_shape(asset.tensors[m.tensors["up"]].shape):
                dora_shapes[str(index)] = list(info.shape)
        outputs.append(_Out(f"{m.component}.{m.path}.{suffix[role]}", info.dtype, shape, source=name))
    if dora_shapes:
        record["dora_shapes"] = dora_shapes
    if names != sorted(names):
        module_order = {id(m): i for i, m in enumerate(modules)}
        record["alpha_slots"] = [[pos, module_order[id(by_source[n][1])]] for pos, n in enumerate(names)
                                 if by_source[n][2] == "alpha"]
    metadata = dict(asset.metadata)
    record["added"] = [k for k in ("format",) if k not in metadata]
    if PEFT_METADATA_KEY in metadata:  # a kohya file with its own entry of that name: kept for the way back
        record["source_peft_metadata"] = metadata[PEFT_METADATA_KEY]
    metadata.setdefault("format", "pt")
    metadata[PEFT_METADATA_KEY] = json.dumps(peft_config_entries(modules), sort_keys=True)
    metadata[KOHYA_RECORD_KEY] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    _summarise(report, modules)
    return outputs, metadata


def _kohya_dora_shape(up_shape: tuple[int, ...]) -> tuple[int, ...]:
    """LyCORIS' output-wise magnitude: ``(out, 1)`` for a Linear, ``(out, 1, 1, 1)`` for a conv."""
    return (up_shape[0], 1) if len(up_shape) == 2 else (up_shape[0], 1, 1, 1)


def _peft_dora_shape(m: LoraModule, asset: Any, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    up = asset.tensors[m.tensors["up"]].shape
    out = up[0]
    if math.prod(shape) != out or (len(shape) >= 2 and shape[0] != out):
        raise AssetkitError(f"DoRA magnitude of {m.kohya_name} has shape {list(shape)}: peft's DoRA holds one "
                            f"magnitude per output ({out}); input-wise magnitudes (LyCORIS wd_on_out=False) "
                            "have no peft form", where=where)
    return (out,) if len(up) == 2 else (1, out, 1, 1)


def _peft_to_kohya(asset: Any, names: list[str], configs: dict, family: str | None, spelling: str | None,
                   report: LoraConvertReport, where: str,
                   widths: dict[str, tuple[int, ...]] | None = None) -> tuple[list[_Out], dict[str, str]]:
    modules = parse_peft(names, where)
    metadata = dict(asset.metadata)
    record: dict[str, Any] = {}
    if KOHYA_RECORD_KEY in metadata:
        try:
            record = json.loads(metadata.pop(KOHYA_RECORD_KEY))
        except ValueError:
            raise AssetkitError(f"header entry {KOHYA_RECORD_KEY!r} is not JSON", where=where) from None
    catalogues = component_names(configs)
    two = "text_encoder_2" in {m.component for m in modules} or family == "sdxl"
    prefixes = record.get("prefixes") or (KOHYA_PREFIX_TWO_TE if two else KOHYA_PREFIX_ONE_TE)
    unet_spelling = spelling or record.get("unet") or ("sgm" if family == "sdxl" else "diffusers")
    unmatched: list[str] = []
    for m in modules:
        _check_module(m, asset, where)
        catalogue = catalogues.get(m.component)
        path = m.path
        if m.component != "unet" and not path.startswith("text_model."):
            path = "text_model." + path  # transformers 5 names have no text_model.; kohya's always do
        if catalogue is None or catalogue.lookup(_flat(path)) is None:
            unmatched.append(f"{m.component}.{m.path}")
            continue
        m.path = path
        if m.component == "unet" and unet_spelling == "sgm":
            path = catalogue.to_original.get(path, path)
        elif m.component != "unet" and record.get("text_model") is False:
            path = path.removeprefix("text_model.")
        m.kohya_name = prefixes.get(m.component, KOHYA_PREFIX_TWO_TE.get(m.component, "")) + _flat(path)
    if unmatched:
        raise AssetkitError(f"{len(unmatched)} peft module(s) match no module of the target model: "
                            f"{capped(unmatched, 3)}; give the right --family or --config DIR", where=where)
    if m_dupes := [n for n, c in Counter(m.kohya_name for m in modules).items() if c > 1]:
        raise AssetkitError(f"two peft modules map to one kohya name: {m_dupes[0]}", where=where)
    _check_widths(modules, asset, widths, where)
    report.unet_spelling = unet_spelling if any(m.component == "unet" for m in modules) else None
    alphas_from_metadata(modules, metadata, where)
    if "source_peft_metadata" in record:
        metadata[PEFT_METADATA_KEY] = record["source_peft_metadata"]
    else:
        metadata.pop(PEFT_METADATA_KEY, None)
    for key in record.get("added", []):
        metadata.pop(key, None)
    odd_dtypes = record.get("alpha_dtypes", {})
    no_alpha = set(record.get("no_alpha", []))
    dora_shapes = record.get("dora_shapes", {})
    role_of = {name: (i, m, role) for i, m in enumerate(modules) for role, name in m.tensors.items()}
    kohya_suffix = {"down": "lora_down.weight", "up": "lora_up.weight", "dora": "dora_scale"}
    body: list[_Out] = []
    for name in names:
        index, m, role = role_of[name]
        info = asset.tensors[name]
        shape = tuple(info.shape)
        if role == "dora":
            shape = tuple(dora_shapes.get(str(index)) or _kohya_dora_shape(asset.tensors[m.tensors["up"]].shape))
        body.append(_Out(f"{m.kohya_name}.{kohya_suffix[role]}", info.dtype, shape, source=name))
    alphas: list[_Out] = []
    for i, m in enumerate(modules):
        if i in no_alpha:
            continue
        dtype = odd_dtypes.get(str(i)) or record.get("alpha_dtype") or asset.tensors[m.tensors["down"]].dtype
        assert m.alpha is not None
        alphas.append(_Out(f"{m.kohya_name}.alpha", dtype, (), data=_scalar_bytes(m.alpha, dtype)))
    if "alpha_slots" in record:
        outputs: list[_Out | None] = [None] * (len(body) + len(alphas))
        by_module = {i: out for i, out in zip([i for i in range(len(modules)) if i not in no_alpha], alphas,
                                               strict=True)}
        for pos, module_index in record["alpha_slots"]:
            outputs[pos] = by_module[module_index]
        rest = iter(body)
        ordered = [out if out is not None else next(rest) for out in outputs]
    else:
        ordered = sorted(body + alphas, key=lambda o: o.name)
    _summarise(report, modules)
    return ordered, metadata


def _summarise(report: LoraConvertReport, modules: list[LoraModule]) -> None:
    report.modules = dict(sorted(Counter(m.component for m in modules).items()))
    report.ranks = dict(Counter(m.rank for m in modules))
    report.alphas = dict(Counter(float(m.alpha or 0) for m in modules))
    report.dora = any("dora" in m.tensors for m in modules)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def convert_lora(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, to: str,
                 family: str | None = None, config: str | os.PathLike[str] | None = None,
                 unet_spelling: str | None = None, overwrite: bool = False,
                 verify: bool = True) -> LoraConvertReport:
    """Convert a LoRA between kohya and peft (diffusers) naming; see the module docstring.

    ``to`` is ``diffusers`` (peft names) or ``kohya``; ``family`` (sd1, sd2, sdxl) or ``config``
    (a diffusers pipeline folder) give the module names of the target model (default: the family
    the probe finds); ``unet_spelling`` (``diffusers``/``sgm``) picks kohya's UNet names on the way
    to kohya (default: as recorded, else ``sgm`` for SDXL as sd-scripts writes it). The output is
    written atomically and re-read: every tensor's bytes must equal the source's.
    """
    from ..formats.atomic import check_destination
    from ..formats.safetensors_writer import SafetensorsWriter, TensorSpec
    from .to_safetensors import open_source

    started = time.perf_counter()
    if to not in TARGETS:
        raise AssetkitError(f"unknown LoRA target {to!r}: use diffusers or kohya")
    if unet_spelling not in (None, "diffusers", "sgm"):
        raise AssetkitError(f"unknown kohya UNet spelling {unet_spelling!r}: use diffusers or sgm")
    src, dst = Path(src), Path(dst)
    where = str(src)
    if src.exists() and dst.exists() and src.resolve() == dst.resolve():
        raise AssetkitError("output is the input file: choose another output path", where=str(dst))
    check_destination(dst, overwrite)
    asset = open_source(src)
    try:
        names = list(asset.tensors)
        _check_algorithms(names, where)
        source_format = detect_format(names)
        if source_format == "unknown":
            raise AssetkitError("not a kohya or peft LoRA (no lora_unet_/lora_te*_ or lora_A/lora_B names)",
                                where=where)
        target_format = "peft" if to == "diffusers" else "kohya"
        if source_format == target_format:
            raise AssetkitError(f"already in {source_format} naming (what --to {to} writes)", where=where)
        report = LoraConvertReport(src, dst, source_format, target_format)
        if config is None and family is None:
            family = _family(asset)
        configs = load_configs(config, family)
        widths = module_weight_shapes(config) if config is not None else None
        if source_format == "kohya":
            outputs, metadata = _kohya_to_peft(asset, names, configs, report, where, widths)
        else:
            outputs, metadata = _peft_to_kohya(asset, names, configs, family, unet_spelling, report, where, widths)
        specs = [TensorSpec(o.name, o.dtype, o.shape) for o in outputs]
        with SafetensorsWriter(dst, specs, metadata, overwrite=overwrite) as writer:
            for out in outputs:
                writer.write(out.data if out.data is not None else asset.tensor_bytes(out.source))
            writer.flush()
            if verify:
                _verify(writer.temp_path, outputs, metadata, asset)
                report.verified = True
        report.tensors = len(outputs)
    finally:
        asset.close()
    report.seconds = time.perf_counter() - started
    return report


def _verify(path: Path, outputs: list[_Out], metadata: dict[str, str], asset: Any) -> None:
    from ..formats.safetensors import read_safetensors

    written = read_safetensors(path)
    try:
        if list(written.tensors) != [o.name for o in outputs] or written.metadata != metadata:
            raise VerificationError("output header differs from the plan", where=str(path))
        for out in outputs:
            info = written.tensors[out.name]
            expected = out.data if out.data is not None else bytes(asset.tensor_bytes(out.source))
            if info.dtype != out.dtype or tuple(info.shape) != out.shape or \
                    bytes(written.tensor_bytes(out.name)) != bytes(expected):
                raise VerificationError(f"tensor {out.name!r} differs from its source", where=str(path))
    finally:
        written.close()
