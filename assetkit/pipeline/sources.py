"""Where a spec's names point: a path, else a registry name. The one module of the pipeline that
knows about the registry (``assetkit.registry``, when that layer is installed).
"""

from __future__ import annotations

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


def open_registry() -> Any:
    """The user's registry (``$ASSETKIT_HOME``, else the platform's user data dir)."""
    from ..registry import Registry

    return Registry()


_FILE_KINDS = ("lora", "textual_inversion", "ip_adapter")


def resolve(name: str, root: Path, registry: Any | None = None) -> Source:
    """A spec name: an existing path (relative to ``root``), else a registry name or hash."""
    candidate = Path(name).expanduser()
    if not candidate.is_absolute():
        candidate = root / candidate
    if candidate.exists():
        return Source(name, candidate.resolve())
    if "/" in name or name.endswith((".safetensors", ".ckpt", ".pt", ".bin")):
        raise AssetkitError("no such file or directory", where=str(candidate))
    registry = registry if registry is not None else open_registry()
    record = registry.resolve(name)  # NotFoundError is an AssetkitError naming the name
    first, second = ("file", "diffusers") if record.kind in _FILE_KINDS else ("diffusers", "file")
    try:
        path = Path(registry.path(name, layout=first))
    except AssetkitError:
        path = Path(registry.path(name, layout=second))
    return Source(name, path, str(record.id))


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
