"""``assetkit check SPEC_or_LOCK``: the pre-deployment gate (files, compatibility, smoke)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import EXIT_OK, EXIT_PROBLEMS, emit_json, handles_errors, json_option

DEVICE = click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
                      help="Where the smoke generation runs (auto: CUDA in fp16 when present, else CPU fp32).")
JUNIT = click.option("--junit", type=click.Path(path_type=Path), default=None, help="Write a JUnit XML report.")
HUB = click.option("--hub", is_flag=True,
                   help="Resolve Hugging Face Hub ids (org/name, hf://org/name[@revision][/file]) through "
                        "huggingface_hub: the local cache, and the network unless HF_HUB_OFFLINE=1.")
REPORT = click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
                      help="Write a report folder (report.json, junit.xml, images, contact sheet, index.html).")


def print_result(result: object, json_output: bool) -> None:
    """Text or JSON rendering of a CheckResult, then the exit code (0 pass, 1 problems)."""
    doc = result.to_dict()  # type: ignore[attr-defined]
    if json_output:
        emit_json(doc)
    else:
        for suite, body in doc["suites"].items():
            click.echo(f"{suite:<14} {'pass' if body['ok'] else 'FAIL'}")
            for f in body["findings"]:
                where = f" [{f['where']}]" if f["where"] else ""
                click.echo(f"  {f['severity']:<10} {f['code']}: {f['message']}{where}")
        compat = doc.get("compatibility") or {}
        for role, facts in compat.get("components", {}).items():
            for comp, cov in facts.get("coverage", {}).items():
                shown = "not checked" if cov["matched"] < 0 else f"{cov['matched']}/{cov['total']} modules matched"
                click.echo(f"  {role} {comp}: {shown}")
        smoke = doc.get("smoke") or {}
        if smoke.get("timings"):
            figures = ", ".join(f"{k} {v:.2f} s" for k, v in smoke["timings"].items())
            click.echo(f"smoke on {smoke['device']} {smoke['dtype']}: {figures}")
        for key, label in (("html", "report"), ("junit_file", "junit")):
            if key in doc["report"]:
                click.echo(f"{label}: {doc['report'][key]}")
        click.echo("PASS" if doc["ok"] else "FAIL")
    raise SystemExit(EXIT_OK if doc["ok"] else EXIT_PROBLEMS)


@click.command("check")
@click.argument("target", type=click.Path(path_type=Path))
@DEVICE
@JUNIT
@REPORT
@click.option("--no-smoke", is_flag=True, help="Files and compatibility only (no pipeline is assembled, nothing is generated).")
@HUB
@json_option
@handles_errors
def command(target: Path, device: str, junit: Path | None, report_dir: Path | None, no_smoke: bool, hub: bool,
            json_output: bool) -> None:
    """Check a pipeline spec (YAML) or lock: every file scanned and validated, a lock's files
    unchanged, every component compatible with the base (headers only), then a smoke generation.
    Exit 0 only when everything passes, 1 when a check found problems."""
    from ..pipeline.gate import run_check

    print_result(run_check(target, device=device, smoke=not no_smoke, report_dir=report_dir, junit=junit, hub=hub),
                 json_output)
