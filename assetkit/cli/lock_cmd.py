"""``assetkit lock SPEC``: pin every component of a pipeline spec by sha256 (and registry id)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import emit_json, handles_errors, json_option
from .check_cmd import HUB


@click.command("lock")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Lock file to write (default: SPEC with the suffix .lock).")
@HUB
@json_option
@handles_errors
def command(spec: Path, output: Path | None, hub: bool, json_output: bool) -> None:
    """Resolve SPEC's names (paths or registry names; Hub ids with --hub) and write a lock pinning
    every file by sha256 (a Hub component also by the commit it resolved to)."""
    from ..pipeline import load_spec, lock_spec, write_lock

    lock = lock_spec(load_spec(spec), hub=hub)
    dest = output or spec.with_suffix(".lock")
    write_lock(lock, dest)
    if json_output:
        emit_json({"ok": True, "lock": str(dest), **lock.to_dict()})
        return
    click.echo(f"Locked {len(lock.components)} components into {dest}:")
    for c in lock.components:
        size = sum(f.bytes for f in c.files)
        pin = c.files[0].sha256[:12] if len(c.files) == 1 else f"{len(c.files)} files"
        rid = f"  registry {c.registry_name} ({(c.registry_sha256 or '')[:12]})" if c.registry_name else ""
        if c.hub:
            rid = f"  hub {c.hub['repo_id']}@{c.hub['revision'][:12]}"
        click.echo(f"  {c.role:<22} {c.name}  ({pin}, {size} bytes){rid}")
