"""``assetkit inspect PATH``: what a checkpoint or diffusers folder is, and why. Reads headers only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..findings import FAILING, truncated
from ._common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    finish,
    handles_errors,
    human_bytes,
    human_count,
    json_option,
    plural,
)

_METADATA_WIDTH = 100
_CANDIDATES_SHOWN = 6


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@click.option("--tensors", "list_tensors", is_flag=True, help="Also list every tensor (name, dtype, shape).")
@click.option("--variant", default=None, metavar="V",
              help="diffusers folders: read the *.V.safetensors weights (e.g. fp16).")
@handles_errors
def command(path: Path, json_output: bool, list_tensors: bool, variant: str | None) -> None:
    """Identify a checkpoint file or diffusers folder: kind, family, variant, prediction type and
    key layout, with the evidence behind each, plus sizes, dtypes, components and metadata.

    Exit 0 when the path was read, 1 when it was read but a file it names is missing (a shard,
    a component folder: an error finding), 2 when it cannot be read.
    """
    from ..check import hygiene_findings
    from ..formats import open_asset
    from ..probe import inspect_report

    with open_asset(path, variant=variant) as asset:
        report = inspect_report(asset, tensors=list_tensors)
        report["findings"] += [f.to_dict() for f in hygiene_findings(asset)]
    failing = any(f["severity"] in FAILING for f in report["findings"])
    finish(report, json_output=json_output, render=render_text, code=EXIT_PROBLEMS if failing else EXIT_OK)


def render_text(report: dict[str, Any]) -> str:
    """The human summary of an :func:`~assetkit.probe.inspect_report` document."""
    lines = [report["summary"]]
    lines.append(f"  path        {report['path']}")
    lines.append(f"  format      {report['format']}, {plural(report['tensors'], 'tensor')}, "
                 f"{human_count(report['parameters'])} parameters, {human_bytes(report['bytes'])}")
    if report["dtypes"]:
        lines.append("  dtypes      " + ", ".join(f"{dtype} x{n}" for dtype, n in report["dtypes"].items()))
    details = {k: v for k, v in report["details"].items() if k not in ("target_modules",)}
    if details:
        lines.append("  details     " + "; ".join(f"{k}={_short(plain_text(v), 60)}" for k, v in details.items()))
    if report["components"]:
        lines.append("")
        lines.append("components")
        rows = [("name", "kind", "family", "tensors", "params", "size", "dtypes")]
        for name, comp in report["components"].items():
            rows.append((name, comp["kind"], comp["family"] or "?", str(comp["tensors"]),
                         human_count(comp["parameters"]), human_bytes(comp["bytes"]),
                         ", ".join(f"{d} x{n}" for d, n in comp["dtypes"].items())))
        lines.extend(_table(rows))
    lines.append("")
    lines.append("evidence")
    lines.extend(f"  - {line}" for line in report["evidence"])
    if len(report["candidates"]) > 1:
        lines.append("")
        lines.append("candidates")
        rows = [("score", "kind", "family", "layout", "prober")]
        for cand in report["candidates"][:_CANDIDATES_SHOWN]:
            rows.append((f"{cand['score']:.2f}", cand["kind"], cand["family"] or "-", cand["layout"] or "-",
                         cand["prober"]))
        lines.extend(_table(rows))
        if len(report["candidates"]) > _CANDIDATES_SHOWN:
            lines.append(f"  ... {len(report['candidates']) - _CANDIDATES_SHOWN} more (see --json)")
    if report["metadata"]:
        lines.append("")
        lines.append("metadata")
        width = min(32, max(len(k) for k in report["metadata"]))
        for key, value in report["metadata"].items():
            lines.append(f"  {key:<{width}}  {_short(plain_text(value), _METADATA_WIDTH)}")
    if report["unknown_globals"]:
        lines.append("")
        lines.append("unknown pickle globals (never imported)")
        lines.extend(f"  - {name}" for name in report["unknown_globals"])
    if report["notes"]:
        lines.append("")
        lines.append("notes")
        lines.extend(f"  - {note}" for note in report["notes"])
    lines.append("")
    if report["findings"]:
        lines.append("findings")
        for finding in report["findings"]:
            where = f" [{finding['where']}]" if finding["where"] else ""
            lines.append(f"  {finding['severity']:<10} {finding['code']}: {finding['message']}{where}")
    else:
        lines.append("findings    none")
    if "tensor_list" in report:
        lines.append("")
        lines.append("tensors")
        for tensor in report["tensor_list"]:
            shape = "[" + ", ".join(str(d) for d in tensor["shape"]) + "]"
            lines.append(f"  {tensor['name']}  {tensor['dtype']}  {shape}")
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as left-aligned columns (the first row is the header), indented by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def plain_text(value: Any) -> str:
    """A JSON value as a reader writes it: lists joined by commas, dicts as ``key: value``, no reprs."""
    if isinstance(value, (list, tuple)):
        return ", ".join(plain_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {plain_text(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def _short(value: Any, limit: int) -> str:
    return truncated(str(value).replace("\n", " "), limit)
