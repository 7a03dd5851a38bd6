"""``assetkit demo``: write a few tiny example checkpoints (real tensor names) to try the commands on."""

from __future__ import annotations

import shlex
import shutil
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


def _next_commands(directory: Path) -> list[str]:
    def q(name: str) -> str:
        return shlex.quote(str(directory / name))

    return [
        f"assetkit inspect {q('sd15-tiny.safetensors')}",
        f"assetkit inspect {q('sd15-tiny.ckpt')} --tensors",
        f"assetkit scan {shlex.quote(str(directory))}",
        f"assetkit validate {q('sd15-tiny.safetensors')} {q('sd15-diffusers-tiny')}",
        f"assetkit convert {q('sd15-tiny.ckpt')} {q('sd15-converted.safetensors')}",
    ]


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
@json_option
@handles_errors
def command(directory: Path, overwrite: bool, json_output: bool) -> None:
    """Write tiny example checkpoints with real tensor names into DIRECTORY (default ./assetkit-demo).

    Offline and fast: an SD 1.5 checkpoint as .safetensors and .ckpt, a kohya LoRA, a VAE and a
    diffusers folder, all a few MB. Prints the commands to try next.
    """
    records = write_demo(directory, overwrite=overwrite)
    commands = _next_commands(directory)
    if json_output:
        emit_json({"ok": True, "directory": str(directory), "files": records, "next": commands})
        return
    click.echo(f"Wrote {len(records)} demo checkpoints to {directory}:")
    width = max(len(Path(r["path"]).name) for r in records)
    for record in records:
        name = Path(record["path"]).name + ("/" if record["container"] == "diffusers" else "")
        click.echo(f"  {name:<{width + 1}}  {human_bytes(record['bytes']):>10}  {record['description']}")
    click.echo("\nNext, try:")
    for line in commands:
        click.echo(f"  {line}")
