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
    #: set by :func:`locate` when the registry no longer holds the pinned asset: ``{"registry": its
    #: root}`` (neither the content id nor the name found), plus ``"now"`` (id, name, sha256 of the
    #: other asset the pinned name now names). Not stored in the lock file.
    registry_note: dict[str, Any] | None = None

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


def spec_sha256(spec_doc: Any) -> str:
    """sha256 of a lock's spec section, as canonical JSON (sorted keys, no spaces): a hand edit of
    the spec inside a lock (a LoRA scale, the smoke settings) changes it."""
    text = json.dumps(spec_doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Lock:
    spec: PipelineSpec
    components: list[LockedComponent] = field(default_factory=list)
    source: Path | None = None
    version: int = LOCK_VERSION  #: the version it was read as (written files are always LOCK_VERSION)
    #: as read: (the sha256 pinned in the file, the sha256 of its spec section); the pinned one is
    #: None for a lock written before locks pinned their spec
    spec_pins: tuple[str | None, str] | None = None

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        """The JSON form; paths relative to ``base`` (default: the lock file's folder, when known).
        ``spec_sha256`` pins the spec section itself (:func:`spec_sha256`)."""
        if base is None and self.source is not None:
            base = Path(self.source).resolve().parent
        spec = self.spec.to_dict()
        return {"assetkit_lock": LOCK_VERSION, "spec": spec, "spec_sha256": spec_sha256(spec),
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
    """A lock is JSON with an ``assetkit_lock`` version, or any file named ``*.lock`` (so that a
    broken one is reported as a broken lock, not as a spec); a spec is YAML."""
    if Path(path).suffix == ".lock":
        return True
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
    except json.JSONDecodeError as exc:
        raise SpecError(f"not valid JSON (a lock is JSON): {exc.msg} at column {exc.colno}",
                        where=f"{path}:{exc.lineno}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"not a readable lock file: {getattr(exc, 'strerror', None) or exc}", where=str(path)) from None
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
    pinned_spec = doc.get("spec_sha256")
    if pinned_spec is not None and not isinstance(pinned_spec, str):
        raise SpecError("broken lock file: spec_sha256 must be a string", where=str(path))
    return Lock(spec, components, source=Path(path), version=version,
                spec_pins=(pinned_spec, spec_sha256(doc["spec"])))


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
        note: dict[str, Any] = {"registry": str(getattr(registry, "root", ""))}
        for key in (component.registry_sha256, component.registry_name):
            if not key:
                continue
            try:
                source = registry_source(registry, key)
            except AssetkitError:
                continue
            if key == component.registry_sha256 and source.registry_sha256 != key:
                continue  # the hash of a file inside another asset, not this asset's content id
            if component.registry_sha256 and source.registry_sha256 != component.registry_sha256:
                # the pinned name now names another asset: never take its files for the pinned ones
                note["now"] = {"id": source.registry_id, "name": source.registry_name,
                               "sha256": source.registry_sha256}
                continue
            component.path, component.registry_id = str(source.path), source.registry_id
            break
        else:
            component.registry_note = note


def _file_path(component: LockedComponent, pinned: PinnedFile) -> Path:
    root = Path(component.path)
    return root / pinned.path if pinned.path else root


def missing_blobs(lock: Lock) -> list[str]:
    """sha256s of pinned files that are not present locally (missing path)."""
    return sorted({p.sha256 for c in lock.components for p in c.files if not _file_path(c, p).is_file()})


def _registry_finding(component: LockedComponent, lock: Lock) -> Finding:
    """The pinned registry asset is not in this registry and its stored path is gone: say so, what
    the pinned name names now, and how to get the asset back."""
    note = component.registry_note or {}
    name, pinned = component.registry_name or component.name, component.registry_sha256 or "?"
    lock_file = lock.source or "LOCK"
    remedy = (f"add it again (assetkit registry add PATH --name {name}) or pull it from the team remote "
              f"(assetkit registry pull --lock {lock_file})")
    where = f"{component.role} {component.name}"
    now = note.get("now")
    if now:
        return Finding("lock-registry-changed", "error",
                       f"registry name {name!r} now names another asset (#{now['id']} {now['name']}, content id "
                       f"{(now['sha256'] or '?')[:16]}...), not the pinned one (content id {pinned[:16]}...), which "
                       f"is no longer in the registry at {note.get('registry')}: {remedy}, or lock the spec again "
                       f"to pin the asset the name names now", where)
    return Finding("lock-registry-missing", "error",
                   f"registry asset {name!r} (content id {pinned[:16]}...) is no longer in the registry at "
                   f"{note.get('registry')}: {remedy}", where)


def _spec_findings(lock: Lock) -> list[Finding]:
    """The lock's spec section against its pin: edited by hand is an error, not pinned a warning."""
    if lock.spec_pins is None:
        return []
    pinned, actual = lock.spec_pins
    if pinned is None:
        return [Finding("lock-spec-unpinned", "warning", "this lock does not pin its spec section (written by an "
                        "older assetkit), so a hand edit of it would go unnoticed: lock the spec again to pin it",
                        "spec")]
    if pinned != actual:
        return [Finding("lock-spec-changed", "error", f"the lock's spec section was edited after locking (sha256 "
                        f"{actual[:16]}... != pinned {pinned[:16]}...): edit the spec file and lock it again "
                        "(assetkit lock SPEC), not the lock", "spec")]
    return []


def verify_lock(lock: Lock) -> list[Finding]:
    """The spec section against its pin (``lock-spec-changed``), then every pinned file re-hashed:
    changed, missing and unpinned extra files are errors; a pinned
    registry asset that is no longer in the registry (its files gone) is ``lock-registry-missing``,
    or ``lock-registry-changed`` when its name now names another asset."""
    findings = _spec_findings(lock)
    for component in lock.components:
        root = Path(component.path)
        where = f"{component.role} {component.name}"
        if component.registry_note and not all(_file_path(component, p).is_file() for p in component.files):
            findings.append(_registry_finding(component, lock))
            continue
        if not root.exists():
            findings.append(Finding("lock-missing", "error", f"{root} no longer exists", where))
            continue
        for pinned in component.files:
            path = _file_path(component, pinned)
            if not path.is_file():
                findings.append(Finding("lock-missing", "error", f"pinned file {path} is missing", where))
                continue
            size = path.stat().st_size
            if size != pinned.bytes:  # sizes compared with sizes; the sha256 is not worth computing
                findings.append(Finding("lock-changed", "error", f"{path} changed since the lock (size {size} bytes "
                                        f"!= pinned {pinned.bytes} bytes)", where))
                continue
            digest = file_sha256(path)
            if digest != pinned.sha256:
                findings.append(Finding(
                    "lock-changed", "error",
                    f"{path} changed since the lock (sha256 {digest[:16]}... != pinned {pinned.sha256[:16]}..., "
                    f"both {size} bytes)", where))
        if root.is_dir():
            pinned_names = {p.path for p in component.files}
            extra = [f.relative_to(root).as_posix() for f in component_files(root)
                     if f.relative_to(root).as_posix() not in pinned_names]
            if extra:
                findings.append(Finding("lock-extra-file", "error",
                                        f"files added since the lock: {', '.join(extra[:5])}", where))
    return findings
