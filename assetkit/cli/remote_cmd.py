"""Team remotes on the ``assetkit registry`` group: ``remote add/ls/rm``, ``push``, ``pull``, and
``--remote`` on ``ls``, ``find``, ``verify`` and ``gc``.

:func:`attach` is called once by ``registry_cmd`` with its group; everything else lives here so
that the registry's own commands stay as they are (``--remote`` is added to them by wrapping their
callbacks: without it they run unchanged). boto3 is imported only when a remote is used.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._common import EXIT_PROBLEMS, emit_json, fail, handles_errors, human_bytes, json_option

remote_option = click.option("--remote", "remote_name", metavar="NAME",
                             help="Remote to use (default: the registry's default remote).")


def _registry(root: Path | None) -> Any:
    from .registry_cmd import _registry as open_registry  # imported late: registry_cmd imports this module

    return open_registry(root)


def _open(registry: Any, name: str | None, progress: Any = None) -> tuple[str, Any]:
    from ..registry.remote.transfer import open_remote

    return open_remote(registry, name, progress=progress)


class _Progress:
    """Objects, bytes and skipped blobs on one stderr line, on a terminal and not with --json."""

    def __init__(self, enabled: bool, verb: str) -> None:
        from ..registry.remote.transfer import TransferStats

        self.enabled = enabled and sys.stderr.isatty()
        self.verb = verb
        self.stats = TransferStats()

    def __call__(self, event: str, sha256: str, nbytes: int) -> None:
        self.stats(event, sha256, nbytes)
        if self.enabled and event in ("sent", "received", "done", "skip", "raced"):
            s = self.stats
            click.echo(f"\r{self.verb}: {s.objects} object(s), {human_bytes(s.bytes)}, {s.skipped + s.raced} "
                       f"already there ", nl=False, err=True)

    def finish(self) -> None:
        if self.enabled:
            click.echo("", err=True)


# ---- remote add / ls / rm -------------------------------------------------------------------

@click.group("remote", invoke_without_command=True)
@json_option
@click.pass_context
def remote_group(ctx: click.Context, json_output: bool, root: Path | None) -> None:
    """The registry's team remotes (S3-compatible object stores; credentials from the AWS chain).
    Alone, the same as `remote ls`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(remote_ls_cmd, root=root, json_output=json_output)
    elif json_output or ctx.get_parameter_source("root") == click.core.ParameterSource.COMMANDLINE:
        fail(f"--json and --root go after the subcommand: assetkit registry remote {ctx.invoked_subcommand} ... "
             "--json", json_output=json_output)


@remote_group.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--endpoint-url", help="S3 API endpoint (MinIO, R2, SeaweedFS, Ceph...); default: AWS.")
@click.option("--region", help="Region of the bucket.")
@click.option("--profile", help="AWS profile to take credentials from (never stored by assetkit).")
@click.option("--default", "make_default", is_flag=True, help="Make this the default remote.")
@json_option
@handles_errors
def remote_add_cmd(name: str, url: str, endpoint_url: str | None, region: str | None, profile: str | None,
                   make_default: bool, root: Path | None, json_output: bool) -> None:
    """Add remote NAME at URL (s3://bucket/prefix)."""
    from ..registry.remote import RemoteConfig, RemoteSpec

    spec = RemoteSpec.parse(url, endpoint_url, region, profile)
    config = RemoteConfig(_registry(root).root)
    config.add(name, spec, make_default=make_default)
    if json_output:
        emit_json({"ok": True, "name": name, **spec.to_dict(), "default": config.default == name})
    else:
        click.echo(f"added remote {name}: {spec.url}" + (" (default)" if config.default == name else ""))


@remote_group.command("ls")
@json_option
@handles_errors
def remote_ls_cmd(root: Path | None, json_output: bool) -> None:
    """List the configured remotes."""
    from ..registry.remote import RemoteConfig

    config = RemoteConfig(_registry(root).root)
    remotes, default = config.remotes(), config.default
    if json_output:
        emit_json({"ok": True, "default": default,
                   "remotes": [{"name": n, **s.to_dict(), "default": n == default} for n, s in remotes.items()]})
        return
    for name, spec in remotes.items():
        extra = "".join(f" {k}={v}" for k, v in (("endpoint", spec.endpoint_url), ("region", spec.region),
                                                  ("profile", spec.profile)) if v)
        click.echo(f"{'*' if name == default else ' '} {name:<20} {spec.url}{extra}")
    if not remotes:
        click.echo("no remotes; add one with: assetkit registry remote add NAME s3://bucket/prefix", err=True)


@remote_group.command("rm")
@click.argument("name")
@json_option
@handles_errors
def remote_rm_cmd(name: str, root: Path | None, json_output: bool) -> None:
    """Forget remote NAME (nothing on the object store is touched)."""
    from ..registry.remote import RemoteConfig

    spec = RemoteConfig(_registry(root).root).remove(name)
    if json_output:
        emit_json({"ok": True, "removed": name, "url": spec.url})
    else:
        click.echo(f"removed remote {name} ({spec.url})")


# ---- push / pull ------------------------------------------------------------------------------

def _report_transfer(result: Any, verb: str, json_output: bool) -> None:
    doc = result.to_dict()
    if json_output:
        emit_json(doc)
    else:
        for asset in doc["assets"]:
            click.echo(f"{verb:<8} {asset['name']:<40} {asset.get('kind') or ''}")
        for failure in doc["failed"]:
            blob = f" blob {failure['blob']}" if failure.get("blob") else ""
            click.echo(f"FAILED   {failure['asset']}{blob}: {failure['error']}")
        moved = "sent" if verb == "pushed" else "received"
        click.echo(f"{doc['objects']} object(s), {human_bytes(doc['bytes'])} {moved}; {doc['skipped'] + doc['raced']} "
                   f"already there ({human_bytes(doc['skipped_bytes'])})"
                   + (f"; {human_bytes(doc['resumed_bytes'])} resumed" if doc["resumed_bytes"] else "")
                   + f" [{doc['url']}]")
    if not result.ok:
        sys.exit(EXIT_PROBLEMS)


@click.command("push")
@click.argument("names", nargs=-1)
@click.option("--all", "push_all", is_flag=True, help="Push every asset of the registry.")
@remote_option
@json_option
@handles_errors
def push_cmd(names: tuple[str, ...], push_all: bool, remote_name: str | None, root: Path | None,
             json_output: bool) -> None:
    """Upload assets (their missing blobs, then their manifests) to a remote. Exit 1 if any failed."""
    from ..registry.remote.transfer import push

    if bool(names) == push_all:
        fail("name the assets to push, or pass --all (not both)", json_output=json_output)
    registry = _registry(root)
    progress = _Progress(not json_output, "push")
    name, remote = _open(registry, remote_name)
    try:
        result = push(registry, remote, None if push_all else names, remote_name=name, progress=progress)
    finally:
        progress.finish()
    _report_transfer(result, "pushed", json_output)


@click.command("pull")
@click.argument("names", nargs=-1)
@click.option("--lock", "lock_file", type=click.Path(path_type=Path),
              help="Pull exactly the sha256s a pipeline lock file pins.")
@remote_option
@json_option
@handles_errors
def pull_cmd(names: tuple[str, ...], lock_file: Path | None, remote_name: str | None, root: Path | None,
             json_output: bool) -> None:
    """Download assets (blobs verified before they enter the store) from a remote. Exit 1 if any failed."""
    from ..registry.remote.transfer import pull

    if not names and lock_file is None:
        fail("name the assets to pull (or pass --lock LOCK)", json_output=json_output)
    registry = _registry(root)
    progress = _Progress(not json_output, "pull")
    try:
        if lock_file is not None:
            from ..pipeline import read_lock
            from ..pipeline.sources import fetch_lock
            from ..registry.remote.transfer import TransferResult

            name, remote = _open(registry, remote_name)  # a clear error when no remote is configured
            result, still_missing = fetch_lock(read_lock(lock_file), registry, progress=progress,
                                               remote_name=name)
            result = result or TransferResult(name, remote.url)
            result.failed.extend({"asset": str(lock_file), "blob": sha, "error": "pinned file still missing"}
                                 for sha in (still_missing if result.ok else []))
        else:
            name, remote = _open(registry, remote_name)
            result = pull(registry, remote, names, remote_name=name, progress=progress)
    finally:
        progress.finish()
    _report_transfer(result, "pulled", json_output)


# ---- --remote on ls / find / verify / gc -------------------------------------------------------

def _ls_remote(kwargs: dict[str, Any], name: str | None) -> None:
    from ..registry.remote.transfer import ls_remote

    registry = _registry(kwargs.get("root"))
    remote_name, remote = _open(registry, name)
    rows = [row for row in ls_remote(remote)
            if (not kwargs.get("pattern") or fnmatch.fnmatchcase(str(row["name"]), kwargs["pattern"]))
            and (not kwargs.get("kind") or row["kind"] == kwargs["kind"])
            and (not kwargs.get("family") or row["family"] == kwargs["family"])
            and (not kwargs.get("tag") or kwargs["tag"] in row["tags"])]
    if kwargs.get("json_output"):
        emit_json({"ok": True, "remote": remote_name, "url": remote.url, "assets": rows})
        return
    for row in rows:
        click.echo(f"{row['name']:<40} {row['kind'] or '?':<12} {row['family'] or '?':<8} "
                   f"{human_bytes(int(row['size'] or 0)):>11}  {row['blobs']} blob(s)")
    click.echo(f"{len(rows)} asset(s) on {remote_name} ({remote.url})")


def _find_remote(kwargs: dict[str, Any], name: str | None) -> None:
    from ..registry.remote.transfer import find_remote

    registry = _registry(kwargs.get("root"))
    remote_name, remote = _open(registry, name)
    hits = find_remote(remote, kwargs["hash_value"])
    rows = [{k: v for k, v in hit.items() if k != "manifest"} for hit in hits]
    if kwargs.get("json_output"):
        emit_json({"ok": bool(rows), "remote": remote_name, "matches": rows})
    else:
        for row in rows:
            click.echo(f"{row['name']:<40} {','.join(row['matched'])}")
        if not rows:
            click.echo(f"assetkit: no asset on {remote_name} has a hash {kwargs['hash_value']!r}", err=True)
    if not rows:
        sys.exit(EXIT_PROBLEMS)


def _verify_remote(kwargs: dict[str, Any], name: str | None) -> None:
    from ..registry.remote.transfer import verify_remote

    registry = _registry(kwargs.get("root"))
    remote_name, remote = _open(registry, name)
    report = verify_remote(remote, remote_name=remote_name, quick=bool(kwargs.get("quick")))
    if kwargs.get("json_output"):
        emit_json(report.to_dict())
    else:
        for finding in report.findings:
            click.echo(finding.to_text())
        click.echo(f"{'ok' if report.ok else 'PROBLEMS'}: {report.manifests} manifest(s), {report.blobs} blob(s), "
                   f"{human_bytes(report.bytes)} on {remote_name}" + (" (sizes only)" if kwargs.get("quick") else
                                                                       " rehashed"))
    if not report.ok:
        sys.exit(EXIT_PROBLEMS)


def _gc_remote(kwargs: dict[str, Any], name: str | None) -> None:
    from ..registry.remote.transfer import DEFAULT_GRACE_SECONDS, gc_remote

    json_output = bool(kwargs.get("json_output"))
    dry_run, yes = bool(kwargs.get("dry_run")), bool(kwargs.get("yes"))
    if dry_run == yes:
        fail("gc --remote needs --dry-run (list) or --yes (delete)", json_output=json_output)
    ctx = click.get_current_context()
    grace = kwargs.get("grace")
    if grace is None or ctx.get_parameter_source("grace") == click.core.ParameterSource.DEFAULT:
        grace = DEFAULT_GRACE_SECONDS
    registry = _registry(kwargs.get("root"))
    remote_name, remote = _open(registry, name)
    report = gc_remote(remote, delete=yes, grace_seconds=float(grace), remote_name=remote_name)
    if json_output:
        emit_json(report.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    for blob in report.unreferenced:
        click.echo(f"{verb} {blob['sha256']}  {human_bytes(blob['size'])}")
    click.echo(f"{verb} {len(report.unreferenced)} unreferenced blob(s) ({human_bytes(report.bytes)}) on "
               f"{remote_name}; kept {len(report.kept_young)} younger than {float(grace):g} s; "
               f"{len(report.aborted_uploads)} stale unfinished upload(s) {'to abort' if dry_run else 'aborted'}")


def _add_remote_mode(command: click.Command, on_remote: Callable[[dict[str, Any], str | None], None],
                     extra: tuple[click.Option, ...] = ()) -> None:
    """Give an existing registry command ``--remote`` (and ``--remote-name``); without them it runs as before."""
    command.params.extend([
        click.Option(["--remote", "on_remote"], is_flag=True, help="Run on the team remote instead of locally."),
        click.Option(["--remote-name"], metavar="NAME", help="With --remote: which remote (default: the default)."),
        *extra,
    ])
    local = command.callback
    remote_cb = handles_errors(lambda **kwargs: on_remote(kwargs, kwargs.get("remote_name")))
    extra_names = [option.name for option in extra]

    def callback(**kwargs: Any) -> Any:
        use_remote, remote_name = kwargs.pop("on_remote"), kwargs.pop("remote_name")
        if use_remote:
            return remote_cb(**kwargs, remote_name=remote_name)
        given = [f"--{n.replace('_', '-')}" for n in ["remote_name", *extra_names]
                 if (remote_name if n == "remote_name" else kwargs.get(n))]
        for n in extra_names:
            kwargs.pop(n)
        if given:
            fail(f"{', '.join(given)} only go with --remote", json_output=bool(kwargs.get("json_output")))
        return local(**kwargs) if local is not None else None

    command.callback = callback


def attach(group: click.Group, root_option: Callable[[Any], Any]) -> None:
    """Add ``remote``, ``push`` and ``pull`` to the registry group (with its ``--root`` option), and
    ``--remote`` to ls/find/verify/gc."""
    for sub in (remote_group, remote_add_cmd, remote_ls_cmd, remote_rm_cmd, push_cmd, pull_cmd):
        if not any(param.name == "root" for param in sub.params):
            root_option(sub)
    for sub in (remote_group, push_cmd, pull_cmd):
        group.add_command(sub)
    yes = click.Option(["--yes"], is_flag=True, help="With --remote: really delete (no dry run).")
    for name, on_remote, extra in (("ls", _ls_remote, ()), ("find", _find_remote, ()),
                                   ("verify", _verify_remote, ()), ("gc", _gc_remote, (yes,))):
        if name in group.commands:
            _add_remote_mode(group.commands[name], on_remote, extra)
