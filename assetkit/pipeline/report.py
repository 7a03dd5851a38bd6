"""The report folder of a check: ``report.json``, ``junit.xml``, the images as PNG, a contact
sheet PNG and a small self-contained HTML page (no external resources) showing them with the
findings and figures. Every file is written atomically."""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

from ..findings import Finding, render_junit, sort_findings


def _png_bytes(array: Any) -> bytes:
    import numpy as np
    from PIL import Image

    data = np.nan_to_num(np.asarray(array, dtype="float32"), nan=1.0)  # NaN shown white, not hidden as black
    image = Image.fromarray((data.clip(0, 1) * 255).round().astype("uint8"))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    from ..formats.atomic import atomic_write

    with atomic_write(path, overwrite=True) as fh:
        fh.write(data)


def contact_sheet(images: list[Any], labels: list[str]) -> bytes:
    """The images side by side with their labels under them, as PNG bytes."""
    from PIL import Image, ImageDraw

    tiles = [Image.open(io.BytesIO(_png_bytes(a))).convert("RGB") for a in images]
    size = max(128, max((max(t.size) for t in tiles), default=128))
    sheet = Image.new("RGB", (max(1, len(tiles)) * (size + 8) + 8, size + 30), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        tile = tile.resize((size, size), Image.NEAREST)
        x = 8 + i * (size + 8)
        sheet.paste(tile, (x, 8))
        draw.text((x, size + 12), label[:24], fill=(0, 0, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-") or "image"


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
        ".error,.dangerous,.suspicious{color:#b00}.warning{color:#a60}.ok{color:#070}"
        "figure{display:inline-block;margin:.5em}img{image-rendering:pixelated;width:192px;height:192px}")


def write_report(folder: Path, result: dict[str, Any], findings_by_suite: dict[str, list[Finding]],
                 images: list[Any] | None = None) -> dict[str, Path]:
    """Write the report folder; ``result`` is the check's JSON document, ``images`` SmokeImages."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    written: dict[str, Path] = {}
    figures = []
    for image in images or []:
        path = folder / "images" / f"{_slug(image.label)}.png"
        _write(path, _png_bytes(image.array))
        figures.append((image, path.relative_to(folder).as_posix()))
    if images:
        sheet = folder / "contact_sheet.png"
        _write(sheet, contact_sheet([i.array for i in images], [i.label for i in images]))
        written["contact_sheet"] = sheet
    result = dict(result, images=[{"label": i.label, "note": i.note, "file": rel} for i, rel in figures])
    written["json"] = folder / "report.json"
    _write(written["json"], (json.dumps(result, indent=2, default=str) + "\n").encode("utf-8"))
    written["junit"] = folder / "junit.xml"
    _write(written["junit"], junit_bytes(result.get("target", "pipeline"), findings_by_suite))
    written["html"] = folder / "index.html"
    _write(written["html"], _html(result, findings_by_suite, figures, "contact_sheet" in written).encode("utf-8"))
    return written


def junit_bytes(target: str, findings_by_suite: dict[str, list[Finding]]) -> bytes:
    return render_junit([(f"assetkit.check.{suite}", [(target, findings)])
                         for suite, findings in findings_by_suite.items()])


def _html(result: dict[str, Any], by_suite: dict[str, list[Finding]], figures: list[tuple[Any, str]],
          sheet: bool) -> str:
    e = html.escape
    ok = result.get("ok")
    rows = []
    for suite, findings in by_suite.items():
        for f in sort_findings(findings):
            rows.append(f"<tr><td>{e(suite)}</td><td class='{e(f.severity)}'>{e(f.severity)}</td>"
                        f"<td>{e(f.code)}</td><td>{e(f.message)}</td><td>{e(f.where)}</td></tr>")
    smoke = result.get("smoke") or {}
    timing_rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.3f} s</td></tr>" for k, v in smoke.get("timings", {}).items())
    memory_rows = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in smoke.get("memory", {}).items())
    figs = "".join(f"<figure><img src='{e(rel)}' alt='{e(i.label)}'><figcaption>{e(i.label)}<br><small>"
                   f"{e(i.note)}</small></figcaption></figure>" for i, rel in figures)
    suites = "".join(f"<li>{e(s)}: <span class='{'ok' if not any(f.failing for f in fs) else 'error'}'>"
                     f"{'pass' if not any(f.failing for f in fs) else 'FAIL'}</span></li>" for s, fs in by_suite.items())
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>assetkit check: {e(str(result.get('target')))}"
            f"</title><style>{_CSS}</style></head><body><h1>assetkit check: <span class='{'ok' if ok else 'error'}'>"
            f"{'PASS' if ok else 'FAIL'}</span></h1><p>{e(str(result.get('target')))}</p><ul>{suites}</ul>"
            f"<h2>Images</h2>{figs or '<p>no images (smoke did not run)</p>'}"
            + ("<p><a href='contact_sheet.png'>contact sheet</a></p>" if sheet else "")
            + f"<h2>Findings</h2><table><tr><th>check</th><th>severity</th><th>code</th><th>message</th><th>where</th>"
            f"</tr>{''.join(rows) or '<tr><td colspan=5>none</td></tr>'}</table>"
            f"<h2>Figures</h2><table>{timing_rows}{memory_rows}</table>"
            f"<p><small>device {e(str(smoke.get('device', '-')))}, dtype {e(str(smoke.get('dtype', '-')))}; "
            f"full data in report.json</small></p></body></html>\n")
