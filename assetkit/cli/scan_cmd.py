"""``assetkit scan PATH...``: is it safe to load? Never runs a pickle."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    check_junit_destination,
    fail,
    finish,
    handles_errors,
    json_option,
    write_junit,
)


@click.command("scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a JUnit XML report to FILE (one test case per scanned file).")
@click.option("--no-recursive", is_flag=True, help="Only the files directly inside the folders given.")
@handles_errors
def command(paths: tuple[Path, ...], json_output: bool, junit_file: Path | None, no_recursive: bool) -> None:
    """Scan checkpoints for code: pickles are interpreted by assetkit itself, never run.

    A file is safe only when every pickle in it uses nothing but the exact allowlist of inert
    tensor-rebuilding names. Folders are walked for checkpoint-like files. Exit 0 when every file
    is safe, 1 when any is unsafe, unsupported or broken, 2 for unreadable input.
    """
    from ..check.scan import VERDICTS, scan_paths
    from ..formats import missing_path_error

    for path in paths:
        if not path.exists():
            fail(str(missing_path_error(path)), json_output=json_output)
    check_junit_destination(junit_file)
    results = scan_paths(paths, recursive=not no_recursive)
    summary = {verdict: sum(1 for r in results if r.verdict == verdict) for verdict in VERDICTS}
    summary["files"] = len(results)
    write_junit(junit_file, "scan", [(str(r.path), r.findings) for r in results])

    def render(_document: object) -> None:
        for result in results:
            click.echo(f"{result.verdict.upper():<12} {result.path}")
            for finding in result.findings:
                click.echo(f"    {finding.to_text()}")
        click.echo("")
        click.echo(f"{'verdict':<12} files")
        for verdict in VERDICTS:
            click.echo(f"{verdict:<12} {summary[verdict]}")
        click.echo(f"{'total':<12} {len(results)}")
        if not results:
            click.echo("assetkit: no checkpoint files found to scan (nothing is safe by default: exit 1)", err=True)

    finish({"results": [r.to_dict() for r in results], "summary": summary}, json_output=json_output, render=render,
           code=EXIT_OK if results and all(r.verdict == "safe" for r in results) else EXIT_PROBLEMS)
