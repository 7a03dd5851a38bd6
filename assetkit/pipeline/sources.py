"""Where a spec's names point: a path, else a registry name. The one module of the pipeline that
knows about the registry (``assetkit.registry``, when that layer is installed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AssetkitError


@dataclass(frozen=True)
class Source:
    """A resolved component: the path to read and, for a registry name, the record's id."""

    name: str
    path: Path
    registry_id: str | None = None


def open_registry() -> Any | None:
    """The user's registry (``$ASSETKIT_HOME``), or None when the registry layer is not there."""
    try:
        from ..registry import Registry  # type: ignore[attr-defined]
    except ImportError:
        return None
    home = os.environ.get("ASSETKIT_HOME")
    try:
        return Registry(home) if home else Registry()
    except TypeError:
        return None


def resolve(name: str, root: Path, registry: Any | None = None) -> Source:
    """A spec name: an existing path (relative to ``root``), else a registry name or hash."""
    candidate = Path(name).expanduser()
    if not candidate.is_absolute():
        candidate = root / candidate
    if candidate.exists():
        return Source(name, candidate.resolve())
    registry = registry if registry is not None else open_registry()
    if registry is None:
        raise AssetkitError("no such file or directory, and no registry to look the name up in", where=name)
    try:
        record = registry.resolve(name)
    except (KeyError, LookupError, AssetkitError) as exc:
        raise AssetkitError(f"neither a path nor a registry name ({exc})", where=name) from None
    layout = "diffusers" if getattr(record, "kind", None) == "pipeline" else "file"
    try:
        path = Path(registry.path(name, layout=layout))
    except (KeyError, LookupError, AssetkitError, ValueError):
        path = Path(registry.path(name))
    return Source(name, path, str(getattr(record, "id", "")) or None)


def fetch_missing(lock: Any, registry: Any | None) -> list[str]:
    """Hook for the team remote: fetch the pinned blobs of ``lock`` that are not present locally.

    Returns the sha256s still missing afterwards. Does nothing without a configured remote (the
    remote layer fills this in)."""
    from .lock import missing_blobs

    missing = missing_blobs(lock)
    remote = getattr(registry, "remote", None) if registry is not None else None
    if not missing or remote is None or not hasattr(registry, "pull_blobs"):
        return missing
    registry.pull_blobs(missing)
    return missing_blobs(lock)
