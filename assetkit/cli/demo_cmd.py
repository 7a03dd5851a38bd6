"""``assetkit demo``: write a few tiny example checkpoints (real tensor names) to try the commands on."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import AssetkitError, OutputExistsError
from ._common import emit_json, handles_errors, human_bytes, json_option

#: (file or folder name, fixture id, container, what it is)
DEMO_FILES: tuple[tuple[str, str, str, str], ...] = (
    ("sd15-tiny.safetensors", "sd15", "safetensors", "SD 1.5 full checkpoint"),
    ("sd15-tiny.ckpt", "sd15", "torch-zip", "the same as a pickled .ckpt (state_dict wrapper)"),
    ("lora-sd15-kohya-tiny.safetensors", "lora_sd15_kohya", "safetensors", "kohya LoRA, rank 4, ss_* metadata"),
    ("vae-sd-tiny.safetensors", "vae_sd", "safetensors", "standalone SD VAE"),
    ("sd15-diffusers-tiny", "diffusers_sd15", "diffusers", "diffusers folder saved by diffusers"),
)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def program() -> str:
    """How to call assetkit from here: ``assetkit`` when that is on PATH (an activated venv),
    else the path of this installation's script (``.venv/bin/assetkit`` after the README's set-up)."""
    script = Path(sys.executable).parent / "assetkit"
    on_path = shutil.which("assetkit")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "assetkit"
    try:
        return shlex.quote(os.path.relpath(script))
    except ValueError:  # another drive (Windows)
        return shlex.quote(str(script))


def _next_commands(directory: Path, registry: str | None = None) -> list[str]:
    def q(name: str) -> str:
        return shlex.quote(str(directory / name))

    ak = program()
    commands = [
        f"{ak} inspect {q('sd15-tiny.safetensors')}",
        f"{ak} inspect {q('sd15-tiny.ckpt')} --tensors",
        f"{ak} scan {shlex.quote(str(directory))}",
        f"{ak} validate {q('sd15-tiny.safetensors')} {q('sd15-diffusers-tiny')}",
        f"{ak} convert {q('sd15-tiny.ckpt')} {q('sd15-converted.safetensors')}",
    ]
    if registry:
        home = f"ASSETKIT_HOME={shlex.quote(registry)} " if not os.environ.get("ASSETKIT_HOME") else ""
        commands += [f"{home}{ak} check {q('pipeline.lock')} --no-smoke",
                     f"{home}{ak} check {q('pipeline.yaml')} --report {q('report2')}"]
    return commands


def write_demo(directory: Path, overwrite: bool = False) -> list[dict[str, Any]]:
    """Write the demo files into ``directory``; returns one record per file."""
    from ..factory import FIXTURES, make_fixture

    if directory.exists() and not directory.is_dir():
        raise AssetkitError("exists and is not a directory", where=str(directory))
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise OutputExistsError("directory exists and is not empty (use --overwrite to write into it)",
                                where=str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    records = []
    for name, fixture_id, container, description in DEMO_FILES:
        target = directory / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        path = make_fixture(fixture_id, directory, container, filename=name)
        expected = FIXTURES[fixture_id].expected
        records.append({"path": str(path), "fixture": fixture_id, "container": container, "description": description,
                        "bytes": _size(path), "kind": expected.kind, "family": expected.family})
    return records


@click.command("demo")
@click.argument("directory", type=click.Path(path_type=Path), default=Path("assetkit-demo"), required=False)
@click.option("--overwrite", is_flag=True, help="Write into DIRECTORY even if it is not empty (replaces the demo files).")
@click.option("--files-only", is_flag=True, help="Only write the example checkpoints (no pipeline, no check).")
@json_option
@handles_errors
def command(directory: Path, overwrite: bool, files_only: bool, json_output: bool) -> None:
    """Write tiny example checkpoints with real tensor names into DIRECTORY (default ./assetkit-demo),
    then run the pipeline job on tiny real-layout assets: register them, convert one between layouts,
    write and lock a spec with a LoRA and a ControlNet, check and smoke-test it on CPU.

    Offline: everything is a few MB. The registry is $ASSETKIT_HOME when set, else DIRECTORY/registry.
    Exit 0 when the check passes, 1 when it does not.
    """
    records = write_demo(directory, overwrite=overwrite)
    pipeline = None
    if not files_only:
        if not json_output:
            click.echo("Building tiny pipeline assets, registering, locking and checking (CPU)...", err=True)
        from ..pipeline.demo import run_demo

        pipeline = run_demo(directory)
    commands = _next_commands(directory, pipeline["registry"] if pipeline else None)
    ok = pipeline["ok"] if pipeline else True
    if json_output:
        emit_json({"ok": ok, "directory": str(directory), "files": records, "pipeline": pipeline, "next": commands})
        raise SystemExit(0 if ok else 1)
    click.echo(f"Wrote {len(records)} demo checkpoints to {directory}:")
    width = max(len(Path(r["path"]).name) for r in records)
    for record in records:
        name = Path(record["path"]).name + ("/" if record["container"] == "diffusers" else "")
        click.echo(f"  {name:<{width + 1}}  {human_bytes(record['bytes']):>10}  {record['description']}")
    if pipeline:
        _print_pipeline(pipeline)
    click.echo("\nNext, try:")
    for line in commands:
        click.echo(f"  {line}")
    raise SystemExit(0 if ok else 1)


def _print_pipeline(doc: dict[str, Any]) -> None:
    check = doc["check"]
    click.echo(f"\nPipeline job ({doc['seconds']} s):")
    names = ", ".join(f"{n} (#{r['id']}, {r['kind']})" for n, r in doc["registered"].items())
    click.echo(f"  registered   {names} in {doc['registry']}")
    click.echo(f"  converted    {doc['converted']['from']} -> {doc['converted']['to']} (diffusers -> original layout)")
    click.echo(f"  spec, lock   {doc['spec']}, {doc['lock']}")
    suites = ", ".join(f"{s} {'pass' if b['ok'] else 'FAIL'}" for s, b in check["suites"].items())
    click.echo(f"  check        {suites}")
    for role, facts in (check.get("compatibility") or {}).get("components", {}).items():
        for comp, cov in facts.get("coverage", {}).items():
            click.echo(f"  coverage     {role} {comp}: {cov['matched']}/{cov['total']} modules")
    smoke = check.get("smoke") or {}
    if smoke.get("timings"):
        click.echo("  smoke        " + ", ".join(f"{k} {v:.2f} s" for k, v in smoke["timings"].items())
                   + f" on {smoke['device']} {smoke['dtype']}")
    click.echo(f"  result       {'PASS' if doc['ok'] else 'FAIL'}; HTML report: {doc['report'].get('html')}")
