"""What a file says about itself: ModelSpec (``modelspec.*``) and kohya (``ss_*``) metadata,
config files, and the plain values of a pickle. Claims are evidence, never the verdict: the
engine cross-checks them against the tensors, and the tensors win.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..findings import truncated
from . import catalog


@dataclass
class Claim:
    """One statement read from metadata: ``field`` (family/kind/variant/prediction_type/rank/...)."""

    field: str
    value: Any
    source: str  #: the metadata key, e.g. ``modelspec.architecture``
    raw: str  #: the text as stored

    def describe(self) -> str:
        return f"{self.source} = {self.raw!r}"


@dataclass
class Claims:
    items: list[Claim] = field(default_factory=list)

    def add(self, field_name: str, value: Any, source: str, raw: Any) -> None:
        self.items.append(Claim(field_name, value, source, _short(raw)))

    def get(self, field_name: str) -> Claim | None:
        return next((c for c in self.items if c.field == field_name), None)

    def all(self, field_name: str) -> list[Claim]:
        return [c for c in self.items if c.field == field_name]

    def __bool__(self) -> bool:
        return bool(self.items)


def _short(raw: Any, limit: int = 80) -> str:
    return truncated(str(raw), limit)


def _truthy(raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, (int, float)):
        return bool(raw)
    if isinstance(raw, str):
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes", "y", "on"):
            return True
        if lowered in ("false", "0", "no", "n", "off", "none", ""):
            return False
    return None


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if value == value else None  # NaN is no claim


def _prefix_rule(value: str, rules: list[list[Any]]) -> tuple[str, dict[str, Any]] | None:
    """The longest prefix rule that matches ``value`` (case-insensitive)."""
    lowered = value.strip().lower()
    best: tuple[str, dict[str, Any]] | None = None
    best_len = -1
    for prefix, family, extra in rules:
        if lowered.startswith(prefix) and len(prefix) > best_len:
            best, best_len = (family, dict(extra)), len(prefix)
    return best


def read_claims(metadata: dict[str, Any]) -> Claims:
    """Every claim the metadata makes about kind, family, variant, prediction type, rank, alpha."""
    rules = catalog.metadata_rules()
    claims = Claims()
    if not metadata:
        return claims
    spec = rules["modelspec"]
    arch_raw = metadata.get(spec["architecture_key"])
    if isinstance(arch_raw, str) and arch_raw.strip():
        base, _, suffix = arch_raw.strip().partition("/")
        matched = _prefix_rule(base, spec["architectures"])
        if matched:
            family, extra = matched
            claims.add("family", family, spec["architecture_key"], arch_raw)
            if "prediction_type" in extra:
                claims.add("prediction_type", extra["prediction_type"], spec["architecture_key"], arch_raw)
            if "model" in extra:
                claims.add("model", extra["model"], spec["architecture_key"], arch_raw)
        for part in (p for p in suffix.lower().split("/") if p):
            meaning = spec["suffixes"].get(part)
            if meaning:
                for key, value in meaning.items():
                    claims.add(key, value, spec["architecture_key"], arch_raw)
    pred_raw = metadata.get(spec["prediction_key"])
    if isinstance(pred_raw, str) and pred_raw.strip():
        mapped = spec["prediction_types"].get(pred_raw.strip().lower())
        if mapped:
            claims.add("prediction_type", mapped, spec["prediction_key"], pred_raw)
    _read_kohya(metadata, rules["kohya"], claims)
    for key in rules["other_prediction_keys"]:
        if key not in metadata:
            continue
        raw = metadata[key]
        mapped = spec["prediction_types"].get(str(raw).strip().lower())
        if mapped:
            claims.add("prediction_type", mapped, key, raw)
        elif key in ("v_prediction", "v_pred") and _truthy(raw) is not None:
            claims.add("prediction_type", "v_prediction" if _truthy(raw) else "epsilon", key, raw)
    _read_diffusers_lora(metadata, rules["diffusers_lora_metadata_key"], claims)
    return claims


def _read_kohya(metadata: dict[str, Any], rules: dict[str, Any], claims: Claims) -> None:
    base_raw = metadata.get(rules["base_model_key"])
    if isinstance(base_raw, str) and base_raw.strip():
        matched = _prefix_rule(base_raw, rules["base_model_versions"])
        if matched:
            family, extra = matched
            claims.add("family", family, rules["base_model_key"], base_raw)
            if "prediction_type" in extra:
                claims.add("prediction_type", extra["prediction_type"], rules["base_model_key"], base_raw)
    if _truthy(metadata.get(rules["v2_key"])) is True:
        claims.add("family", "sd2", rules["v2_key"], metadata[rules["v2_key"]])
    vparam = _truthy(metadata.get(rules["v_parameterization_key"]))
    if vparam is True:
        claims.add("prediction_type", "v_prediction", rules["v_parameterization_key"],
                   metadata[rules["v_parameterization_key"]])
    rank = _number(metadata.get(rules["rank_key"]))
    if rank is not None:
        claims.add("rank", int(rank), rules["rank_key"], metadata[rules["rank_key"]])
    alpha = _number(metadata.get(rules["alpha_key"]))
    if alpha is not None:
        claims.add("alpha", alpha, rules["alpha_key"], metadata[rules["alpha_key"]])
    module = metadata.get(rules["module_key"])
    if isinstance(module, str) and module.strip():
        claims.add("network_module", module.strip(), rules["module_key"], module)
        for prefix, layout in rules["network_modules"]:
            if module.strip().startswith(prefix):
                claims.add("layout", layout, rules["module_key"], module)
                break
        claims.add("kind", "lora", rules["module_key"], module)
    args_raw = metadata.get(rules["args_key"])
    if isinstance(args_raw, str) and args_raw.strip().startswith("{"):
        try:
            args = json.loads(args_raw)
        except (ValueError, RecursionError):
            args = None
        if isinstance(args, dict):
            algo = args.get("algo")
            if isinstance(algo, str) and algo:
                claims.add("algo", algo.lower(), rules["args_key"], args_raw)
            conv = _number(args.get("conv_dim"))
            if conv is not None:
                claims.add("conv_rank", int(conv), rules["args_key"], args_raw)


def _read_diffusers_lora(metadata: dict[str, Any], key: str, claims: Claims) -> None:
    raw = metadata.get(key)
    if not isinstance(raw, str) or not raw.strip().startswith("{"):
        return
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return
    if not isinstance(doc, dict):
        return
    # diffusers stores one adapter config per model (``unet.lora_alpha``...) or a flat one.
    for name, value in doc.items():
        field_name = name.rsplit(".", 1)[-1]
        if field_name == "lora_alpha" and _number(value) is not None:
            claims.add("alpha", _number(value), key, raw)
            break
        if field_name == "r" and _number(value) is not None:
            claims.add("rank", int(_number(value)), key, raw)
    claims.add("kind", "lora", key, raw)
