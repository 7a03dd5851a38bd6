"""Locks: a spec with every component pinned by sha256 (and registry id).

``lock_spec`` resolves and hashes; ``write_lock``/``read_lock`` store it as JSON (atomically,
paths relative to the lock file, registry assets by name and content id); ``locate`` finds each
component on this machine (registry content id, then name, then the stored path);
``verify_lock`` re-hashes and reports every changed, missing or extra file as a finding;
``missing_blobs`` lists the pinned sha256s that are not present locally (the remote's hook).
Light: no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..findings import Finding
from .sources import Source, resolve_spec
from .spec import PipelineSpec, SpecError, spec_from_dict

LOCK_VERSION = 2
READABLE_VERSIONS = (1, 2)
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def component_files(path: Path) -> list[Path]:
    """The files that make up a component: the file itself, or every non-hidden file of a folder."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))


@dataclass
class PinnedFile:
    path: str  #: relative to the component's path ("" for a single-file component)
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}


@dataclass
class LockedComponent:
    role: str
    name: str
    path: str  #: where the files are on this machine (absolute); stored relative to the lock file
    files: list[PinnedFile]
    registry_id: str | None = None  #: this machine's record id (informational: ids differ between machines)
    registry_name: str | None = None  #: the record's name when the spec named a registry asset
    registry_sha256: str | None = None  #: the record's content id (the same on every machine)
    hub: dict[str, Any] | None = None  #: a Hub component: repo_id, the pinned commit, filename

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        registry = None
        if self.registry_sha256 or self.registry_name:
            registry = {"name": self.registry_name, "sha256": self.registry_sha256, "id": self.registry_id}
        doc = {"role": self.role, "name": self.name, "path": _relative(Path(self.path), base),
               "registry": registry, "files": [f.to_dict() for f in self.files]}
        if self.hub:
            doc["hub"] = dict(self.hub)
        return doc


def _relative(path: Path, base: Path | None) -> str:
    """``path`` relative to ``base`` (POSIX separators), absolute when there is no relative way."""
    if base is None:
        return str(path)
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path)


@dataclass
class Lock:
    spec: PipelineSpec
    components: list[LockedComponent] = field(default_factory=list)
    source: Path | None = None
    version: int = LOCK_VERSION  #: the version it was read as (written files are always LOCK_VERSION)

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        """The JSON form; paths relative to ``base`` (default: the lock file's folder, when known)."""
        if base is None and self.source is not None:
            base = Path(self.source).resolve().parent
        return {"assetkit_lock": LOCK_VERSION, "spec": self.spec.to_dict(),
                "components": [c.to_dict(base) for c in self.components]}

    def sources(self) -> dict[str, Source]:
        """role -> the pinned source (path and registry id)."""
        return {c.role: Source(c.name, Path(c.path), c.registry_id, c.registry_name, c.registry_sha256,
                               c.files[0].sha256 if len(c.files) == 1 and not c.files[0].path else None)
                for c in self.components}


def pin(path: Path) -> list[PinnedFile]:
    files = component_files(path)
    return [PinnedFile("" if f == path else f.relative_to(path).as_posix(), file_sha256(f), f.stat().st_size)
            for f in files]


def lock_spec(spec: PipelineSpec, registry: Any | None = None, *, hub: bool = False) -> Lock:
    """Resolve every name of ``spec`` (Hub ids too with ``hub``: pinned to the commit got) and pin its files."""
    lock = Lock(spec)
    for role, source in resolve_spec(spec, registry, hub=hub).items():
        lock.components.append(LockedComponent(role, source.name, str(source.path), pin(source.path),
                                               source.registry_id, source.registry_name, source.registry_sha256,
                                               source.hub))
    return lock


def write_lock(lock: Lock, dest: Path, overwrite: bool = True) -> Path:
    """Write ``lock`` to ``dest`` atomically, its paths relative to ``dest``'s folder."""
    from ..formats.atomic import atomic_write

    text = json.dumps(lock.to_dict(Path(dest).resolve().parent), indent=2) + "\n"
    with atomic_write(dest, overwrite=overwrite) as fh:
        fh.write(text.encode("utf-8"))
    lock.source = Path(dest)
    return dest


def is_lock_file(path: Path) -> bool:
    """A lock is JSON with an ``assetkit_lock`` version; a spec is YAML."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64).lstrip()
    except OSError:
        return False
    return head.startswith(b"{") and b"assetkit_lock" in head


def read_lock(path: Path) -> Lock:
    """Read a lock of any version this assetkit knows (1: absolute paths, local registry ids; 2:
    paths relative to the lock, registry names and content ids). A newer version is refused."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError("no such file", where=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"not a readable lock file: {exc}", where=str(path)) from None
    version = doc.get("assetkit_lock") if isinstance(doc, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise SpecError("not an assetkit lock (no integer assetkit_lock version)", where=str(path))
    if version not in READABLE_VERSIONS:
        newer = "written by a newer assetkit; upgrade to read it" if version > LOCK_VERSION else "unknown"
        raise SpecError(f"lock version {version} is {newer} (this assetkit reads versions "
                        f"{', '.join(map(str, READABLE_VERSIONS))})", where=str(path))
    folder = Path(path).resolve().parent
    try:
        spec = spec_from_dict(doc["spec"], source=Path(path).resolve(), where=f"{path} (spec)")
        spec.lines, spec.label = {}, str(path)  # lines of the YAML it was re-read from mean nothing to the user
        components = [_component(c, version, folder) for c in doc["components"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SpecError(f"broken lock file: missing or wrong field {exc}", where=str(path)) from None
    pinned, named = [(c.role, c.name) for c in components], spec.components()
    if pinned != named:  # edited by hand: a component of the spec without pins would pass unchecked
        missing = [f"{r} {n}" for r, n in named if (r, n) not in pinned]
        extra = [f"{r} {n}" for r, n in pinned if (r, n) not in named or pinned.count((r, n)) > 1]
        detail = "; ".join(part for part in (f"not pinned: {', '.join(missing)}" if missing else "",
                                             f"not in its spec or repeated: {', '.join(extra)}" if extra else "")
                           if part) or "in another order"
        raise SpecError(f"broken lock file: its components do not match its spec ({detail}); lock the spec again",
                        where=str(path))
    return Lock(spec, components, source=Path(path), version=version)


def _component(doc: dict[str, Any], version: int, folder: Path) -> LockedComponent:
    files = [PinnedFile(str(f["path"]), str(f["sha256"]), int(f["bytes"])) for f in doc["files"]]
    hint = Path(doc["path"])
    path = str(hint if hint.is_absolute() else (folder / hint).resolve())
    if version == 1:  # a local record id only; the spec's name was the registry name
        rid = doc.get("registry_id")
        return LockedComponent(doc["role"], doc["name"], path, files, rid, doc["name"] if rid else None)
    registry = doc.get("registry") or {}
    hub = doc.get("hub")
    if hub is not None and not (isinstance(hub, dict) and isinstance(hub.get("repo_id"), str)
                                and isinstance(hub.get("revision"), str)):
        raise TypeError("'hub' (needs repo_id and revision)")
    return LockedComponent(doc["role"], doc["name"], path, files, registry.get("id"), registry.get("name"),
                           registry.get("sha256"), hub)


def locate(lock: Lock, registry: Any | None = None, *, hub: bool = False) -> None:
    """Point every component of ``lock`` at its files on this machine, in order: the registry
    asset with the pinned content id, the registry asset of the pinned name, the path stored in
    the lock. (The team remote comes last: :func:`..sources.fetch_missing` pulls what is still
    missing.) The registry is opened only for a lock that names registry assets. A Hub component
    whose stored path is gone is found in the local Hugging Face cache at its pinned commit
    (downloaded at that commit only with ``hub``)."""
    from ..errors import AssetkitError
    from . import hub as hub_ids
    from .sources import open_registry, registry_source

    for component in lock.components:
        if component.hub and not Path(component.path).exists():
            ref = hub_ids.HubRef(component.hub["repo_id"], component.hub["revision"], component.hub.get("filename"))
            try:
                path, _ = hub_ids.fetch(ref, where=f"{component.role} {component.name}", cache_only=not hub)
            except AssetkitError:
                if hub:
                    raise
                continue  # verify_lock reports it missing
            component.path = str(path)
    wanted = [c for c in lock.components if c.registry_sha256 or c.registry_name]
    if not wanted:
        return
    registry = registry if registry is not None else open_registry()
    for component in wanted:
        for key in (component.registry_sha256, component.registry_name):
            if not key:
                continue
            try:
                source = registry_source(registry, key)
            except AssetkitError:
                continue
            if key == component.registry_sha256 and source.registry_sha256 != key:
                continue  # the hash of a file inside another asset, not this asset's content id
            component.path, component.registry_id = str(source.path), source.registry_id
            break


def _file_path(component: LockedComponent, pinned: PinnedFile) -> Path:
    root = Path(component.path)
    return root / pinned.path if pinned.path else root


def missing_blobs(lock: Lock) -> list[str]:
    """sha256s of pinned files that are not present locally (missing path)."""
    return sorted({p.sha256 for c in lock.components for p in c.files if not _file_path(c, p).is_file()})


def verify_lock(lock: Lock) -> list[Finding]:
    """Re-hash every pinned file: changed, missing and unpinned extra files are errors."""
    findings: list[Finding] = []
    for component in lock.components:
        root = Path(component.path)
        where = f"{component.role} {component.name}"
        if not root.exists():
            findings.append(Finding("lock-missing", "error", f"{root} no longer exists", where))
            continue
        for pinned in component.files:
            path = _file_path(component, pinned)
            if not path.is_file():
                findings.append(Finding("lock-missing", "error", f"pinned file {path} is missing", where))
                continue
            size = path.stat().st_size
            digest = file_sha256(path) if size == pinned.bytes else None
            if digest != pinned.sha256:
                findings.append(Finding(
                    "lock-changed", "error",
                    f"{path} changed since the lock (sha256 {digest or f'not computed, size {size}'} "
                    f"!= pinned {pinned.sha256[:16]}..., {pinned.bytes} bytes)", where))
        if root.is_dir():
            pinned_names = {p.path for p in component.files}
            extra = [f.relative_to(root).as_posix() for f in component_files(root)
                     if f.relative_to(root).as_posix() not in pinned_names]
            if extra:
                findings.append(Finding("lock-extra-file", "error",
                                        f"files added since the lock: {', '.join(extra[:5])}", where))
    return findings
