"""``inspect_report``: the JSON document ``assetkit inspect --json`` prints."""

from __future__ import annotations

from typing import Any

from ..findings import Finding
from ..formats.base import Asset
from .engine import probe
from .result import ProbeResult


def inspect_report(asset: Asset, tensors: bool = False, result: ProbeResult | None = None) -> dict[str, Any]:
    """Everything ``inspect`` knows about ``asset``: identification, sizes, metadata, evidence.

    ``tensors=True`` adds ``tensor_list`` (name, dtype, shape of every tensor, in file order).
    """
    result = result or probe(asset)
    identified = result.to_dict()
    report: dict[str, Any] = {
        "path": str(asset.path),
        "format": asset.format,
        "kind": result.kind,
        "family": result.family,
        "variant": result.variant,
        "prediction_type": result.prediction_type,
        "layout": result.layout,
        "summary": result.summary,
        "components": identified["components"],
        "tensors": len(asset.tensors),
        "parameters": asset.parameters,
        "bytes": asset.nbytes,
        "dtypes": asset.dtype_counts(),
        "metadata": {str(k): _plain(v) for k, v in asset.metadata.items()},
        "unknown_globals": list(asset.unknown_globals),
        "evidence": identified["evidence"],
        "details": identified["details"],
        "candidates": identified["candidates"],
        "findings": _missing_findings(asset) + identified["findings"],
        "notes": list(asset.notes),
        "files": [str(f) for f in asset.files],
    }
    if tensors:
        report["tensor_list"] = [
            {"name": name, "dtype": info.dtype, "shape": list(info.shape)} for name, info in asset.tensors.items()
        ]
    return report


def _missing_findings(asset: Asset) -> list[dict[str, str]]:
    """A file the layout names but that is absent is an error: nothing can load the model as it is."""
    found = []
    for path in asset.missing:
        where = str(path.relative_to(asset.path)) if path.is_relative_to(asset.path) else str(path)
        if path.suffix in (".safetensors", ".bin"):
            found.append(Finding("shard-missing", "error", "shard file named by the index is missing", where))
        else:
            found.append(Finding("component-missing", "error",
                                 "component listed in model_index.json but its folder is missing", where))
    return [f.to_dict() for f in found]


def _plain(value: Any) -> Any:
    """Metadata as JSON: strings, numbers, bools, None, lists and dicts of those; anything else as text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
