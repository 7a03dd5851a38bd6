"""Push, pull, list, find, verify and gc between the user's registry and a team remote.

The verbs are small functions over a :class:`~assetkit.registry.Registry` (its ``store`` and its
``manifest``/``import_manifest``) and an :class:`~.s3.S3BlobStore`; the CLI is a thin loop over them.

* **push**: every blob an asset needs that the remote lacks (HEAD first, conditional create,
  checksummed), then its manifest (``manifests/<name>.json``). Blobs before manifest, so a
  manifest on the remote never points at a blob that is not there yet. A name the remote holds
  for other content is refused (as ``import_manifest`` refuses it locally).
* **pull**: every blob of the manifest the local store lacks, through the local store's own
  verify-then-rename ``put_stream`` (the bytes are hashed as they arrive; a blob that does not
  hash to its address is refused and reported, never stored), then ``import_manifest``. An asset
  whose blobs did not all arrive is not imported: the pull fails (exit 1).
* **verify_remote**: manifests pointing at missing blobs, blobs that do not hash to their
  address (each is downloaded and rehashed), keys that are no blob address, unfinished uploads.
* **gc_remote**: blobs no manifest references and older than the grace period (a push uploads
  its blobs before its manifest, so a push in progress is protected by the grace period), and
  unfinished multipart uploads older than it; a dry run unless ``delete`` is true.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...findings import Finding
from ..blobs import BlobError
from .config import RemoteConfig
from .errors import RemoteError, RemoteIntegrityError, RemoteNotFoundError
from .s3 import Progress, S3BlobStore

if TYPE_CHECKING:
    from ..api import Registry

#: Default grace period of ``gc --remote``: younger objects are never deleted.
DEFAULT_GRACE_SECONDS = 24 * 3600.0


def open_remote(registry: Registry, name: str | None = None, progress: Progress | None = None,
                **options: Any) -> tuple[str, S3BlobStore]:
    """The registry's remote ``name`` (else its default) as a blob store."""
    remote_name, spec = RemoteConfig(registry.root).get(name)
    return remote_name, S3BlobStore(spec, progress=progress, **options)


@dataclass
class TransferStats:
    """What went over the wire, counted by the store's progress events."""

    objects: int = 0  # blobs uploaded or downloaded
    bytes: int = 0  # bytes sent or received
    skipped: int = 0  # blobs already on the other side
    skipped_bytes: int = 0
    resumed_bytes: int = 0  # bytes found in an unfinished upload and not sent again
    raced: int = 0  # blobs another writer created while we uploaded

    def __call__(self, event: str, sha256: str, nbytes: int) -> None:
        if event in ("sent", "received"):
            self.bytes += nbytes
        elif event == "done":
            self.objects += 1
        elif event == "skip":
            self.skipped += 1
            self.skipped_bytes += nbytes
        elif event == "resumed":
            self.resumed_bytes += nbytes
        elif event == "raced":
            self.raced += 1
            self.skipped_bytes += nbytes

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _chain(*callbacks: Progress | None) -> Progress:
    live = [cb for cb in callbacks if cb is not None]

    def progress(event: str, sha256: str, nbytes: int) -> None:
        for cb in live:
            cb(event, sha256, nbytes)

    return progress


@dataclass
class TransferResult:
    """The summary of a push or pull (``to_dict`` is the ``--json`` document)."""

    remote: str
    url: str
    assets: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    stats: TransferStats = field(default_factory=TransferStats)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "remote": self.remote, "url": self.url, "assets": self.assets,
                "failed": self.failed, **self.stats.to_dict()}


def _local_blob_source(registry: Registry, sha256: str) -> Any:
    path_of = getattr(registry.store, "path", None)
    return path_of(sha256) if path_of is not None else None


def push(registry: Registry, remote: S3BlobStore, names: Iterable[str] | None = None, *,
         remote_name: str = "", progress: Progress | None = None) -> TransferResult:
    """Upload the named assets (every asset the user added when ``names`` is None)."""
    wanted = list(names) if names is not None else [a["name"] for a in registry.ls()]
    result = TransferResult(remote_name, remote.url)
    remote.progress = _chain(result.stats, progress)
    done: set[str] = set()
    for name in wanted:
        manifest = registry.manifest(name)
        sent_before = result.stats.bytes
        existing = remote.get_manifest(manifest["name"])
        if existing is not None and existing.get("sha256") != manifest.get("sha256"):
            result.failed.append({"asset": manifest["name"], "error": "the remote holds this name for other content "
                                  f"(sha256 {existing.get('sha256')}); rename it locally and push again"})
            continue
        for sha in manifest["blobs"]:
            if sha in done:
                continue
            source = _local_blob_source(registry, sha)
            if source is not None:
                remote.put_file(source, sha)
            else:
                with registry.store.open(sha) as handle:
                    remote.put_stream(iter(lambda h=handle: h.read(8 * 1024 * 1024), b""), sha)
            done.add(sha)
        if existing is None and not remote.put_manifest(manifest["name"], manifest, create_only=True):
            existing = remote.get_manifest(manifest["name"]) or {}  # another machine created it meanwhile
            if existing.get("sha256") != manifest.get("sha256"):
                result.failed.append({"asset": manifest["name"], "error": "another machine pushed this name for "
                                      f"other content meanwhile (sha256 {existing.get('sha256')})"})
                continue
        elif existing is not None and existing != _comparable(manifest):
            remote.put_manifest(manifest["name"], manifest)  # same content; tags or description changed
        result.assets.append({"name": manifest["name"], "kind": manifest.get("kind"), "blobs": len(manifest["blobs"]),
                              "bytes_sent": result.stats.bytes - sent_before})
    return result


def _comparable(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as it reads back from JSON (tuples become lists), to skip rewriting an equal one."""
    import json

    return json.loads(json.dumps(manifest))


def pull(registry: Registry, remote: S3BlobStore, names: Iterable[str], *, remote_name: str = "",
         progress: Progress | None = None) -> TransferResult:
    """Download the named assets' missing blobs (verified) and import their manifests."""
    result = TransferResult(remote_name, remote.url)
    remote.progress = _chain(result.stats, progress)
    for name in names:
        manifest = remote.get_manifest(name)
        if manifest is None:
            manifest = _manifest_by_hash(remote, name)
        if manifest is None:
            result.failed.append({"asset": name, "error": f"no asset named {name!r} on the remote"})
            continue
        problems = fetch_blobs(registry, remote, manifest["blobs"], result.stats)
        if problems:
            result.failed.extend({"asset": manifest["name"], "blob": sha, "error": why} for sha, why in problems)
            continue
        record = registry.import_manifest(manifest)
        result.assets.append({"name": record.name, "kind": record.kind, "blobs": len(manifest["blobs"])})
    return result


def fetch_blobs(registry: Registry, remote: S3BlobStore, blobs: Iterable[str],
                stats: TransferStats | None = None) -> list[tuple[str, str]]:
    """Bring the blobs the local store lacks; returns (sha256, why) for each that could not come.

    Each arrives through the local store's ``put_stream``: hashed into a temporary file, renamed
    into ``objects/`` only when the bytes hash to the address (the remote's chunks raise after the
    last one when they do not, so the local store discards its temporary file).
    """
    problems: list[tuple[str, str]] = []
    for sha in blobs:
        if registry.store.has(sha):
            if stats is not None:
                stats.skipped += 1
                stats.skipped_bytes += registry.store.size(sha)
            continue
        try:
            stored = registry.store.put_stream(remote.iter_chunks(sha, check=True), sha)
        except RemoteNotFoundError:
            problems.append((sha, "missing on the remote"))
            continue
        except RemoteIntegrityError as exc:
            problems.append((sha, f"refused: {exc.message}"))
            continue
        except BlobError as exc:  # the local store's own hash check
            problems.append((sha, f"refused: {exc}"))
            continue
        if stored != sha or not registry.store.has(sha):
            problems.append((sha, f"local store kept {stored}, not {sha}"))
    return problems


def _manifest_by_hash(remote: S3BlobStore, value: str) -> dict[str, Any] | None:
    """The one manifest with a hash (or hash prefix) ``value``; None when there is not exactly one, or
    when ``value`` cannot be a hash query (then it was a name the remote does not have)."""
    from ..hashes import is_hash_prefix

    if not is_hash_prefix(value.strip()):
        return None
    hits = find_remote(remote, value)
    return hits[0]["manifest"] if len(hits) == 1 else None


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {"name": manifest.get("name"), "kind": manifest.get("kind"), "family": manifest.get("family"),
            "size": manifest.get("size"), "sha256": manifest.get("sha256"), "tags": manifest.get("tags", []),
            "blobs": len(manifest.get("blobs", []))}


def ls_remote(remote: S3BlobStore) -> list[dict[str, Any]]:
    """Summaries of the assets on the remote, by name (read from the manifests alone)."""
    return sorted((_summary(m) for _, m in remote.iter_manifests()), key=lambda s: str(s["name"]))


def _hash_values(manifest: dict[str, Any]) -> Iterable[tuple[str, str]]:
    yield "sha256", str(manifest.get("sha256") or "")
    for entry in manifest.get("hashes", []):
        yield str(entry.get("algo")), str(entry.get("value") or "")
    for entry in manifest.get("files", []):
        yield "file", str(entry.get("sha256") or "")
    for sha in manifest.get("blobs", []):
        yield "blob", sha
    for component in (manifest.get("components") or {}).values():
        yield from _hash_values(component)


def find_remote(remote: S3BlobStore, value: str) -> list[dict[str, Any]]:
    """Assets on the remote with a hash equal to ``value`` (or starting with it: hex digits,
    :data:`~assetkit.registry.hashes.MIN_PREFIX` at least, else a usage error)."""
    from ..hashes import hash_query

    needle = hash_query(value)
    hits = []
    for _, manifest in remote.iter_manifests():
        matches = sorted({algo for algo, have in _hash_values(manifest) if have and have.lower().startswith(needle)})
        if matches:
            hits.append({**_summary(manifest), "matched": matches, "manifest": manifest})
    return hits


@dataclass
class RemoteVerifyReport:
    remote: str
    url: str
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.failing for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "remote": self.remote, "url": self.url, "manifests": self.manifests,
                "blobs": self.blobs, "bytes": self.bytes, "findings": [f.to_dict() for f in self.findings]}


def verify_remote(remote: S3BlobStore, *, remote_name: str = "", quick: bool = False) -> RemoteVerifyReport:
    """Check the remote: referenced blobs present, every blob rehashed (unless ``quick``), no strays."""
    report = RemoteVerifyReport(remote_name, remote.url)
    present = {blob.sha256: blob for blob in remote.iter_blob_info()}
    for name, manifest in remote.iter_manifests():
        report.manifests += 1
        for sha in manifest.get("blobs", []):
            if sha not in present:
                report.findings.append(Finding("remote-blob-missing", "error",
                                               f"manifest {name} needs blob {sha}, which is not on the remote",
                                               remote.key_for(sha)))
    for sha, blob in sorted(present.items()):
        report.blobs += 1
        report.bytes += blob.size
        if not quick and not remote.verify(sha):
            report.findings.append(Finding("remote-blob-corrupt", "error",
                                           f"blob {sha} does not hash to its address", remote.key_for(sha)))
    for key in remote.stray_keys():
        report.findings.append(Finding("remote-stray-object", "warning", "not a blob address", key))
    for upload in remote.pending_uploads():
        report.findings.append(Finding("remote-unfinished-upload", "info",
                                       f"unfinished multipart upload started {upload.initiated:%Y-%m-%d %H:%M} "
                                       "(a push resumes it; gc --remote aborts it after the grace period)",
                                       upload.key))
    return report


@dataclass
class RemoteGcReport:
    remote: str
    url: str
    dry_run: bool
    grace_seconds: float
    unreferenced: list[dict[str, Any]] = field(default_factory=list)  # old enough: removed (or would be)
    kept_young: list[dict[str, Any]] = field(default_factory=list)  # unreferenced but inside the grace period
    aborted_uploads: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(int(b["size"]) for b in self.unreferenced)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "remote": self.remote, "url": self.url, "dry_run": self.dry_run,
                "grace_seconds": self.grace_seconds, "unreferenced": self.unreferenced, "bytes": self.bytes,
                "kept_young": self.kept_young, "aborted_uploads": self.aborted_uploads}


def gc_remote(remote: S3BlobStore, *, delete: bool = False, grace_seconds: float = DEFAULT_GRACE_SECONDS,
              remote_name: str = "", now: _dt.datetime | None = None) -> RemoteGcReport:
    """Blobs no manifest references, older than ``grace_seconds``; deleted only with ``delete``."""
    if grace_seconds < 0:
        raise RemoteError("the grace period cannot be negative")
    now = now or _dt.datetime.now(_dt.UTC)
    cutoff = now - _dt.timedelta(seconds=grace_seconds)
    report = RemoteGcReport(remote_name, remote.url, dry_run=not delete, grace_seconds=grace_seconds)
    referenced: set[str] = set()
    for _, manifest in remote.iter_manifests():  # a manifest that is not JSON raises: nothing is deleted
        referenced.update(manifest.get("blobs", []))
    for blob in remote.iter_blob_info():
        if blob.sha256 in referenced:
            continue
        entry = {"sha256": blob.sha256, "size": blob.size, "last_modified": blob.last_modified.isoformat()}
        (report.unreferenced if _aware(blob.last_modified) <= cutoff else report.kept_young).append(entry)
    for upload in remote.pending_uploads():
        if _aware(upload.initiated) <= cutoff:
            report.aborted_uploads.append(upload.key)
            if delete:
                remote.abort_upload(upload)
    if delete:
        for entry in report.unreferenced:
            remote.delete_blob(entry["sha256"])
    return report


def _aware(moment: _dt.datetime) -> _dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=_dt.UTC)


def pull_pinned(registry: Registry, wanted: Iterable[tuple[str, list[str]]], *, remote: S3BlobStore | None = None,
                remote_name: str | None = None, progress: Progress | None = None) -> TransferResult | None:
    """Pull the assets that hold pinned files: ``wanted`` is (name, [sha256 of each pinned file]).

    Each is matched on the remote by its name when that manifest holds every pinned sha256, else
    by the sha256s alone (a lock may pin a path that was pushed under another name). Returns the
    result with ``assets[i]["name"]`` the local name of each match, or None when the registry has
    no remote configured (nothing to fetch from). An asset that cannot be matched or whose blobs
    are refused makes the result fail.
    """
    if remote is None:
        config = RemoteConfig(registry.root)
        if not config.remotes():
            return None
        remote_name, remote = open_remote(registry, remote_name)
    result = TransferResult(remote_name or "", remote.url)
    manifests = dict(remote.iter_manifests())
    for name, pinned in wanted:
        chosen = _match_pinned(manifests, name, set(pinned))
        if chosen is None:
            result.failed.append({"asset": name, "error": f"no asset on the remote holds the {len(pinned)} pinned "
                                  f"file(s) (first sha256 {pinned[0] if pinned else '-'})"})
            continue
        pulled = pull(registry, remote, [chosen], remote_name=remote_name or "", progress=progress)
        result.failed.extend(pulled.failed)
        result.assets.extend({**asset, "pinned_as": name} for asset in pulled.assets)
        for key, value in pulled.stats.to_dict().items():
            setattr(result.stats, key, getattr(result.stats, key) + value)
    return result


def _match_pinned(manifests: dict[str, dict[str, Any]], name: str, pinned: set[str]) -> str | None:
    def holds(manifest: dict[str, Any]) -> bool:
        return pinned <= {value for _, value in _hash_values(manifest)}

    if name in manifests and holds(manifests[name]):
        return name
    return next((asset for asset, manifest in sorted(manifests.items()) if holds(manifest)), None)
