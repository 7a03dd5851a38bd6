"""``assetkit validate``: no malformed checkpoint or diffusers folder passes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import AssetkitError
from ..findings import Finding, sort_findings
from ._common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    check_junit_destination,
    finish,
    handles_errors,
    json_option,
    plural,
    write_junit,
)

_HELP = """Check checkpoint files and diffusers folders against every rule they must follow.

\b
PATH may be a safetensors file (every rule of the format), a torch .ckpt/.pt/.bin
(zip/legacy container hygiene) or a diffusers pipeline or component folder
(model_index.json against the subfolders, each config.json against its weights by
building the class on the meta device, sharded indexes, variants, tokenizer and
scheduler configs). --numerics also reads every tensor: NaN/Inf, all-zero tensors,
mixed float dtypes.

\b
--json prints one document: for one PATH {"path", "ok", "problems": [{"code",
"severity", "message", "where"}], "checked"}; for several PATHs {"results": [...one
such object per path...], "ok": bool}, where an unreadable path has "error" set.

Exit codes: 0 valid, 1 problems found, 2 usage error or unreadable input.
"""


@click.command("validate", help=_HELP)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--numerics", is_flag=True, help="Also read every tensor: NaN/Inf, all-zero, mixed float dtypes.")
@click.option("--variant", metavar="V", default=None,
              help="Check the V variant weights of a diffusers folder (e.g. fp16); each component must have them.")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a JUnit XML report (one test case per PATH) to this file.")
@json_option
@handles_errors
def command(paths: tuple[Path, ...], numerics: bool, variant: str | None, junit_file: Path | None,
            json_output: bool) -> None:
    from ..check.validate import validate_path

    check_junit_destination(junit_file)
    results: list[dict[str, Any]] = []
    cases: list[tuple[str, list[Finding]]] = []
    first_error: AssetkitError | None = None
    announced = False
    for path in paths:
        if not json_output and not announced and path.is_dir() and sys.stderr.isatty():
            # building each component's class on the meta device imports torch and diffusers (seconds)
            click.echo("assetkit: loading the model classes (torch, diffusers) to check the folder...", err=True)
            announced = True
        try:
            report = validate_path(path, numerics=numerics, variant=variant)
        except AssetkitError as exc:
            first_error = first_error or exc
            results.append({"path": str(path), "ok": False, "error": str(exc), "problems": []})
            cases.append((str(path), [Finding("unreadable", "error", exc.message, exc.where or str(path))]))
            continue
        results.append(report.to_dict())
        cases.append((report.path, report.problems))

    write_junit(junit_file, "validate", cases)

    if len(paths) == 1 and first_error is not None:
        raise first_error  # one line (or {"ok": false, "error"} with --json), exit 2
    all_ok = all(r["ok"] for r in results)
    document = results[0] if len(paths) == 1 else {"results": results, "ok": all_ok}
    code = EXIT_USAGE if first_error is not None else EXIT_OK if all_ok else EXIT_PROBLEMS
    finish(document, json_output=json_output, render=lambda _: _print_human(results), code=code)


def _print_human(results: list[dict[str, Any]]) -> None:
    for result in results:
        if "error" in result:
            click.echo(f"ERROR {result['path']}: {result['error']}")
            continue
        findings = sort_findings(Finding(**p) for p in result["problems"])
        failing = [f for f in findings if f.failing]
        others = len(findings) - len(failing)
        note = f", {plural(others, 'note')}" if others else ""
        if failing:
            click.echo(f"FAIL  {result['path']}: {plural(len(failing), 'problem')}{note}")
        else:
            click.echo(f"OK    {result['path']} ({plural(len(result['checked']), 'check')}{note})")
        for finding in findings:
            click.echo(f"  {finding.to_text()}")
    if len(results) > 1:
        valid = sum(1 for r in results if r["ok"])
        click.echo(f"{valid} of {plural(len(results), 'path')} valid")
