"""Locks: a spec with every component pinned by sha256 (and registry id).

``lock_spec`` resolves and hashes; ``write_lock``/``read_lock`` store it as JSON (atomically);
``verify_lock`` re-hashes and reports every changed, missing or extra file as a finding;
``missing_blobs`` lists the pinned sha256s that are not present locally (the remote's hook).
Light: no torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..findings import Finding
from .sources import Source, resolve
from .spec import PipelineSpec, SpecError, spec_from_dict

LOCK_VERSION = 1
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
    path: str
    files: list[PinnedFile]
    registry_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "path": self.path, "registry_id": self.registry_id,
                "files": [f.to_dict() for f in self.files]}


@dataclass
class Lock:
    spec: PipelineSpec
    components: list[LockedComponent] = field(default_factory=list)
    source: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"assetkit_lock": LOCK_VERSION, "spec": self.spec.to_dict(),
                "components": [c.to_dict() for c in self.components]}

    def sources(self) -> dict[str, Source]:
        """role -> the pinned source (path and registry id)."""
        return {c.role: Source(c.name, Path(c.path), c.registry_id) for c in self.components}


def pin(path: Path) -> list[PinnedFile]:
    files = component_files(path)
    return [PinnedFile("" if f == path else f.relative_to(path).as_posix(), file_sha256(f), f.stat().st_size)
            for f in files]


def lock_spec(spec: PipelineSpec, registry: Any | None = None) -> Lock:
    """Resolve every name of ``spec`` and pin its files."""
    lock = Lock(spec)
    for role, name in spec.components():
        source = resolve(name, spec.root, registry)
        lock.components.append(LockedComponent(role, name, str(source.path), pin(source.path), source.registry_id))
    return lock


def write_lock(lock: Lock, dest: Path, overwrite: bool = True) -> Path:
    from ..formats.atomic import atomic_write

    with atomic_write(dest, overwrite=overwrite) as fh:
        fh.write((json.dumps(lock.to_dict(), indent=2) + "\n").encode("utf-8"))
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
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError("no such file", where=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"not a readable lock file: {exc}", where=str(path)) from None
    if not isinstance(doc, dict) or doc.get("assetkit_lock") != LOCK_VERSION:
        raise SpecError(f"not an assetkit lock (version {LOCK_VERSION})", where=str(path))
    try:
        spec = spec_from_dict(doc["spec"], source=Path(path).resolve(), where=f"{path} (spec)")
        components = [LockedComponent(c["role"], c["name"], c["path"],
                                      [PinnedFile(f["path"], f["sha256"], int(f["bytes"])) for f in c["files"]],
                                      c.get("registry_id")) for c in doc["components"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"broken lock file: missing or wrong field {exc}", where=str(path)) from None
    return Lock(spec, components, source=Path(path))


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
