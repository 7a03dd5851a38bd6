"""``assetkit registry ...``: the user's local registry, one subcommand per :class:`assetkit.Registry` verb."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..ids import Family, Kind, ids
from ._common import EXIT_PROBLEMS, emit_json, handles_errors, human_bytes, json_option

#: the ids --kind and --family take (checked by the API, listed in the help)
_KINDS, _FAMILIES = ", ".join(ids(Kind)), ", ".join(ids(Family))

root_option = click.option("--root", type=click.Path(path_type=Path), envvar="ASSETKIT_HOME",
                           help="Registry folder (default: $ASSETKIT_HOME, else the platform's user data dir).")


def _registry(root: Path | None) -> Any:
    from ..registry import Registry

    return Registry(root)


class _Progress:
    """A byte progress bar on stderr, only on a terminal and not with --json."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        from .convert_cmd import _ByteProgress

        self.bar = _ByteProgress(enabled, label)
        self.bar.start(total)

    def __call__(self, nbytes: int) -> None:
        self.bar.advance(nbytes)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.finish()


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@click.group("registry")
def command() -> None:
    """The local registry: content-addressed blobs, an SQLite index, components stored once."""


@command.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Name (default: from the file or folder name).")
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable).")
@click.option("--description", default="", help="Free text.")
@click.option("--kind", help=f"Override the probe's kind (its answer is kept as evidence): {_KINDS}.")
@click.option("--family", help=f"Override the probe's family (its answer is kept as evidence): {_FAMILIES}.")
@click.option("--config", "config", type=click.Path(path_type=Path),
              help="A diffusers folder whose configs split a single file (default: the catalogue's).")
@root_option
@json_option
@handles_errors
def add_cmd(path: Path, name: str | None, tags: tuple[str, ...], description: str, kind: str | None,
            family: str | None, config: Path | None, root: Path | None, json_output: bool) -> None:
    """Add a file (safetensors, or a pickle: scanned, stored as safetensors) or a diffusers folder."""
    reg = _registry(root)
    total = 2 * _size_of(path) if path.exists() and sys.stderr.isatty() and not json_output else 0
    with _Progress(not json_output, "adding", total) as progress:
        result = reg.add(path, name=name, tags=tags, description=description, kind=kind, family=family,
                         config=config, progress=progress)
    if json_output:
        emit_json({"ok": True, **result.to_dict()})
        return
    r = result.record
    verb = "added" if result.created else "already registered as"
    click.echo(f"{verb} {r.name}: {r.family or '?'} {r.kind}, {human_bytes(r.size)}, stored {r.storage}, "
               f"sha256 {r.sha256[:12]} ({result.seconds:.2f} s)")
    for role, comp in r.components.items():
        reused = " (already stored)" if role in result.components_reused else ""
        click.echo(f"  {role}: {comp}{reused}")
    for note in result.notes:
        click.echo(f"  note: {note}")


@command.command("ls")
@click.argument("pattern", required=False)
@click.option("--kind", help=f"Only this kind: {_KINDS}.")
@click.option("--family", help=f"Only this family: {_FAMILIES}.")
@click.option("--tag")
@click.option("--all", "include_parts", is_flag=True, help="Also list the components of pipelines.")
@root_option
@json_option
@handles_errors
def ls_cmd(pattern: str | None, kind: str | None, family: str | None, tag: str | None, include_parts: bool,
           root: Path | None, json_output: bool) -> None:
    """List assets (PATTERN: a name glob such as 'sdxl-*')."""
    items = _registry(root).ls(kind=kind, family=family, tag=tag, pattern=pattern, include_parts=include_parts)
    if json_output:
        emit_json({"ok": True, "assets": items})
        return
    lines = []  # one write: click.echo per line costs more than the query for 10,000 assets
    for item in items:
        tags = f"  [{', '.join(item['tags'])}]" if item["tags"] else ""
        lines.append(f"{item['name']:<40} {item['kind']:<18} {item['family'] or '-':<13} "
                     f"{human_bytes(item['size']):>11}  {item['sha256'][:10]}{tags}")
    if lines:
        click.echo("\n".join(lines))


@command.command("show")
@click.argument("name")
@root_option
@json_option
@handles_errors
def show_cmd(name: str, root: Path | None, json_output: bool) -> None:
    """Everything known about an asset: probe result, hashes, files, users, sharing."""
    doc = _registry(root).show(name)
    if json_output:
        emit_json({"ok": True, **doc})
        return
    click.echo(f"{doc['name']}  (#{doc['id']})")
    click.echo(f"  {doc['family'] or '?'} {doc['kind']}"
               + "".join(f", {x}" for x in (doc["variant"], doc["prediction_type"]) if x)
               + (f", {doc['layout']} layout" if doc["layout"] else ""))
    for key, value in doc["overrides"].items():
        click.echo(f"  {key} set to {value['given']} (the probe said {value['probe']})")
    click.echo(f"  added as {doc['source_format']}, {human_bytes(doc['size'])}; stored: {doc['storage']}")
    if doc.get("note"):
        click.echo(f"  note: {doc['note']}")
    click.echo(f"  sha256 {doc['sha256']}  AutoV2 {doc['autov2']}")
    for algo, values in doc["hashes"].items():
        if algo not in ("sha256", "autov2"):
            click.echo(f"  {algo} {', '.join(values[:3])}{' ...' if len(values) > 3 else ''}")
    if doc["description"]:
        click.echo(f"  description: {doc['description']}")
    if doc["tags"] or doc["aliases"]:
        click.echo(f"  tags: {', '.join(doc['tags']) or '-'}; aliases: {', '.join(doc['aliases']) or '-'}")
    for role, comp in doc["components"].items():
        click.echo(f"  component {role}: {comp}")
    for f in doc["files"]:
        how = "blob" if f["blob"] else f"recipe ({len(f['recipe']['segments'])} segment(s))"
        click.echo(f"  file {f['relpath']}  {human_bytes(f['size'])}  {how}")
    if doc["used_by"]:
        click.echo(f"  used by: {', '.join(doc['used_by'])}")
    for share in doc["shares"]:
        where = f" in {', '.join(share['used_by'])}" if share["used_by"] else ""
        click.echo(f"  shares {share['blobs']} blob(s), {human_bytes(share['bytes'])}, with {share['asset']}{where}")
    for same in doc["same_weights"]:
        click.echo(f"  {same['note']}")
    for line in doc["probe"].get("evidence", [])[:5]:
        click.echo(f"  evidence: {line}")


@command.command("rm")
@click.argument("name")
@root_option
@json_option
@handles_errors
def rm_cmd(name: str, root: Path | None, json_output: bool) -> None:
    """Remove an asset from the index (its blobs go at the next gc)."""
    removed = _registry(root).rm(name)
    if json_output:
        emit_json({"ok": True, "removed": removed})
        return
    click.echo(f"removed {', '.join(removed)} (run `assetkit registry gc` to free the space)")


@command.command("tag")
@click.argument("name")
@click.argument("tags", nargs=-1)
@click.option("--remove", "remove", multiple=True, help="Tag to remove (repeatable).")
@root_option
@json_option
@handles_errors
def tag_cmd(name: str, tags: tuple[str, ...], remove: tuple[str, ...], root: Path | None, json_output: bool) -> None:
    """Add TAGS to an asset (and --remove others)."""
    record = _registry(root).tag(name, add=tags, remove=remove)
    if json_output:
        emit_json({"ok": True, "name": record.name, "tags": record.tags})
        return
    click.echo(f"{record.name}: {', '.join(record.tags) or 'no tags'}")


@command.command("rename")
@click.argument("name")
@click.argument("new_name")
@root_option
@json_option
@handles_errors
def rename_cmd(name: str, new_name: str, root: Path | None, json_output: bool) -> None:
    """Rename an asset."""
    record = _registry(root).rename(name, new_name)
    if json_output:
        emit_json({"ok": True, "name": record.name, "id": record.id})
        return
    click.echo(f"renamed to {record.name}")


@command.command("find")
@click.argument("hash_value")
@root_option
@json_option
@handles_errors
def find_cmd(hash_value: str, root: Path | None, json_output: bool) -> None:
    """Find assets by sha256, AutoV1/AutoV2 short hash, tensor-data hash or a pickle's sha256 (or a
    prefix of 6+ digits). Exit 1 when nothing matches."""
    matches = _registry(root).find(hash_value)
    if json_output:
        emit_json({"ok": bool(matches), "matches": matches})
    else:
        for m in matches:
            where = f" {m['relpath']}" if m["relpath"] else ""
            click.echo(f"{m['asset']:<40} {m['algo']:<16} {m['value']}{where}")
        if not matches:
            click.echo(f"assetkit: no asset has a hash {hash_value!r}", err=True)
    if not matches:
        sys.exit(EXIT_PROBLEMS)


@command.command("path")
@click.argument("name")
@click.option("--layout", type=click.Choice(["diffusers", "file"]), default=None,
              help="diffusers: a folder diffusers loads; file: one .safetensors file (default: what the asset is).")
@root_option
@json_option
@handles_errors
def path_cmd(name: str, layout: str | None, root: Path | None, json_output: bool) -> None:
    """Print a path diffusers or a UI can load (built once, from links to the blobs)."""
    path = _registry(root).path(name, layout=layout)
    if json_output:
        emit_json({"ok": True, "path": str(path), "layout": "file" if path.is_file() else "diffusers"})
        return
    click.echo(str(path))


@command.command("export")
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--as", "form", type=click.Choice(["auto", "file", "diffusers", "single-file"]), default="auto",
              help="file: the original file, byte for byte; diffusers: a folder; single-file: a pipeline or "
                   "component as one original-layout file, through the converter.")
@click.option("--link", type=click.Choice(["reflink", "hardlink", "symlink", "copy"]),
              help="How whole blobs are placed (default: reflink where the file system can, else copy: an "
                   "independent file). hardlink and symlink share the registry's bytes: editing the file "
                   "would corrupt the registry.")
@click.option("--overwrite", is_flag=True)
@root_option
@json_option
@handles_errors
def export_cmd(name: str, dest: Path, form: str, link: str | None, overwrite: bool, root: Path | None,
               json_output: bool) -> None:
    """Export an asset as a file or a diffusers folder."""
    result = _registry(root).export(name, dest, form=form, link=link, overwrite=overwrite)
    if json_output:
        emit_json({"ok": True, **result})
        return
    how = result["how"]
    if isinstance(how, dict):  # a folder: how many files each way
        how = ", ".join(f"{n} {way}" for way, n in sorted(how.items()))
    click.echo(f"{result['asset']} -> {result['path']} ({result['form']}, {how})")


@command.command("export-tree")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--layout", type=click.Choice(["comfyui", "a1111"]), required=True)
@click.option("--link", type=click.Choice(["reflink", "hardlink", "symlink", "copy"]),
              help="How single files are placed (default: the first of reflink, hardlink, symlink, copy the "
                   "file system allows; folders are symbolic links to the registry's views).")
@root_option
@json_option
@handles_errors
def export_tree_cmd(dest: Path, layout: str, link: str | None, root: Path | None, json_output: bool) -> None:
    """Build a ComfyUI or A1111 models tree of links at DEST (rebuilding it removes only its own links)."""
    result = _registry(root).export_tree(dest, layout, link=link)
    if json_output:
        emit_json({"ok": True, **result})
        return
    click.echo(f"{result['linked']} asset(s) linked under {result['path']} ({layout}); {result['removed']} old link(s) "
               "removed")
    for path in result["kept_not_ours"]:
        click.echo(f"  kept {path}: not a link this command made")
    for item in result["skipped"]:
        click.echo(f"  skipped {item}")
    if result["extra_model_paths_yaml"]:
        click.echo("\nComfyUI: add this to extra_model_paths.yaml:\n")
        click.echo(result["extra_model_paths_yaml"])


@command.command("import-dir")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--layout", type=click.Choice(["auto", "a1111", "comfyui", "hf-cache", "plain"]), default="auto")
@click.option("--follow-links", is_flag=True, help="Follow symbolic links that leave the tree.")
@click.option("--tag", "tags", multiple=True)
@root_option
@json_option
@handles_errors
def import_dir_cmd(folder: Path, layout: str, follow_links: bool, tags: tuple[str, ...], root: Path | None,
                   json_output: bool) -> None:
    """Register every model of an A1111/ComfyUI models tree or a Hugging Face cache (skips known ones).
    Exit 1 when any item failed or was refused."""
    reg = _registry(root)
    total = _size_of(folder) if folder.is_dir() and sys.stderr.isatty() and not json_output else 0
    with _Progress(not json_output, "importing", total) as progress:
        report = reg.import_dir(folder, layout=layout, follow_links=follow_links, tags=tags, progress=progress)
    doc = report.to_dict()
    if json_output:
        emit_json(doc)
    else:
        for item in report.items:
            detail = item.get("name") or item.get("error", "")
            click.echo(f"{item['status']:<8} {item['path']}  {detail}")
        click.echo(f"{doc['added']} added, {doc['skipped']} already there, {doc['failed']} failed ({report.layout})")
    if not report.ok:
        sys.exit(EXIT_PROBLEMS)


@command.command("verify")
@click.option("--quick", is_flag=True, help="Compare sizes instead of rehashing.")
@root_option
@json_option
@handles_errors
def verify_cmd(quick: bool, root: Path | None, json_output: bool) -> None:
    """Rehash every blob; report missing or corrupt ones. Exit 1 when anything is wrong."""
    report = _registry(root).verify(quick=quick)
    if json_output:
        emit_json(report.to_dict())
    else:
        for finding in report.findings:
            click.echo(finding.to_text())
        click.echo(f"{'ok' if report.ok else 'PROBLEMS'}: {report.assets} asset(s), {report.blobs} blob(s), "
                   f"{human_bytes(report.bytes)} checked")
    if not report.ok:
        sys.exit(EXIT_PROBLEMS)


@command.command("gc")
@click.option("--dry-run", is_flag=True, help="Report what would be removed.")
@click.option("--grace", type=float, default=3600.0, show_default=True,
              help="Keep blob files the index does not know yet (an add in progress) and temporary files "
                   "younger than this many seconds. Blobs of removed assets go whatever their age.")
@root_option
@json_option
@handles_errors
def gc_cmd(dry_run: bool, grace: float, root: Path | None, json_output: bool) -> None:
    """Remove blobs no asset needs (those of removed assets at once), leftovers of interrupted adds
    (after the grace period), views of removed assets."""
    report = _registry(root).gc(dry_run=dry_run, grace_seconds=grace)
    doc = report.to_dict()
    if json_output:
        emit_json({"ok": True, **doc})
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {doc['blobs_removed']} blob(s) ({human_bytes(doc['bytes_freed'])}), "
               f"{doc['temporary_removed']} temporary file(s), {doc['views_removed']} view(s)"
               + (f"; kept {doc['kept_younger_than_grace']} younger than {grace:g} s" if doc["kept_younger_than_grace"]
                  else ""))


@command.command("du")
@root_option
@json_option
@handles_errors
def du_cmd(root: Path | None, json_output: bool) -> None:
    """Space used per asset, and what sharing saved."""
    report = _registry(root).du()
    if json_output:
        emit_json({"ok": True, **report.to_dict()})
        return
    click.echo(f"{'asset':<40} {'added':>11} {'stored':>11} {'unique':>11} {'shared':>11}")
    for a in report.assets:
        click.echo(f"{a['name']:<40} {human_bytes(a['added']):>11} {human_bytes(a['stored']):>11} "
                   f"{human_bytes(a['unique']):>11} {human_bytes(a['shared']):>11}")
    saved = report.saved_bytes
    if saved >= 0:
        outcome = f"saved by sharing {human_bytes(saved)}"
    else:  # nothing shared yet: the bytes kept to rebuild files exactly outweigh what sharing saved
        outcome = (f"nothing saved: the store holds {human_bytes(-saved)} more than the files as added (the "
                   "headers kept to rebuild files byte for byte, and the configs of split checkpoints, cost more than "
                   "sharing saved)")
    click.echo(f"on disk {human_bytes(report.disk_bytes)} in {report.blobs} blob(s); as added "
               f"{human_bytes(report.added_bytes)}; {outcome}")


from .remote_cmd import attach as _attach_remote  # noqa: E402 - team remotes: push, pull, remote, --remote

_attach_remote(command, root_option)
