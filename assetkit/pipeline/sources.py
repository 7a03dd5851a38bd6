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
    """A resolved component: the path to read and, for a registry name, the record's local id,
    canonical name and content id (its sha256, the same on every machine that holds the asset)."""

    name: str
    path: Path
    registry_id: str | None = None
    registry_name: str | None = None
    registry_sha256: str | None = None
    sha256: str | None = None  #: a single file's own sha256 when already known (a lock's pin)
    hub: dict[str, Any] | None = None  #: a Hub component: repo_id, the commit resolved, filename


def open_registry() -> Any:
    """The user's registry (``$ASSETKIT_HOME``, else the platform's user data dir)."""
    from ..registry import Registry

    return Registry()


_FILE_KINDS = ("lora", "textual_inversion", "ip_adapter")


def resolve(name: str, root: Path, registry: Any | None = None, *, hub: bool = False) -> Source:
    """A spec name: an existing path (relative to ``root``), else a registry name or hash, else
    (only with ``hub``) a Hugging Face Hub id (:mod:`.hub`). A name that resolves to nothing is
    an AssetkitError saying what was tried (the path, the registry)."""
    from . import hub as hub_ids

    ref = hub_ids.parse_hub_id(name)
    if ref is not None and name.startswith(hub_ids.PREFIX):
        return hub_source(name, ref, allowed=hub)
    candidate = _candidate(name, root)
    if candidate.exists():
        return Source(name, candidate.resolve())
    if ref is not None and hub:
        return hub_source(name, ref, allowed=True)
    if "/" in name or name.endswith((".safetensors", ".ckpt", ".pt", ".bin")):
        hint = "; a Hugging Face Hub id? pass --hub to resolve it" if ref is not None else ""
        raise AssetkitError(f"no such file or directory {candidate}{hint}")
    registry = registry if registry is not None else open_registry()
    try:
        return registry_source(registry, name)
    except AssetkitError as exc:
        raise AssetkitError(f"neither a path (no {candidate}) nor an asset of the registry at "
                            f"{getattr(registry, 'root', '?')} ({exc.message})") from None


def _candidate(name: str, root: Path) -> Path:
    candidate = Path(name).expanduser()
    return candidate if candidate.is_absolute() else root / candidate


def resolve_spec(spec: Any, registry: Any | None = None, *, hub: bool = False) -> dict[str, Source]:
    """role -> Source for every component of ``spec`` (paths relative to the spec's folder). A name
    that resolves to nothing is a SpecError naming the spec file and line, the role and what was
    tried; the base's ``config`` must be a folder beside a single-file base."""
    from .spec import BASE_CONFIG_ROLE, SpecError

    out: dict[str, Source] = {}
    for role, name in spec.components():
        try:
            if role == BASE_CONFIG_ROLE:
                out[role] = _config_source(name, spec.root, out["base"])
            else:
                out[role] = resolve(name, spec.root, registry, hub=hub)
        except SpecError:
            raise
        except AssetkitError as exc:
            what = "base config" if role == BASE_CONFIG_ROLE else role
            raise SpecError(f"{what} {name!r}: {exc}", where=spec.where(role)) from None
    return out


def _config_source(name: str, root: Path, base: Source) -> Source:
    """The base's own configs: a folder (a path only, never a registry name), beside a single file."""
    candidate = _candidate(name, root)
    if not candidate.is_dir():
        raise AssetkitError(f"no such folder {candidate}" if not candidate.exists()
                            else f"{candidate} is not a folder (a diffusers folder or one of its configs only)")
    if base.path.is_dir():
        raise AssetkitError(f"configs are for a single-file base; {base.path} is a folder with its own")
    return Source(name, candidate.resolve())


def hub_source(name: str, ref: Any, *, allowed: bool) -> Source:
    """A Hub component through huggingface_hub (the cache; the network unless HF_HUB_OFFLINE)."""
    from . import hub as hub_ids

    if not allowed:
        raise AssetkitError("a Hugging Face Hub id, resolved only when asked: pass --hub (the local cache, "
                            "and the network unless HF_HUB_OFFLINE=1)", where=name)
    path, commit = hub_ids.fetch(ref, where=name)
    return Source(name, path, hub={**ref.to_dict(), "revision": commit})


def registry_source(registry: Any, key: str, name: str | None = None) -> Source:
    """The registry asset named or hashed ``key`` (NotFoundError, an AssetkitError, when absent)."""
    record = registry.resolve(key)
    first, second = ("file", "diffusers") if record.kind in _FILE_KINDS else ("diffusers", "file")
    try:
        path = Path(registry.path(f"#{record.id}", layout=first))
    except AssetkitError:
        path = Path(registry.path(f"#{record.id}", layout=second))
    return Source(name or key, path.resolve(), str(record.id), record.name, record.sha256)


def fetch_missing(lock: Any, registry: Any | None, progress: Any = None) -> list[str]:
    """The team remote's hook: fetch the pinned files of ``lock`` that are not present locally.

    See :func:`fetch_lock`; returns the sha256s still missing afterwards (all of them when no
    remote is configured). Raises when the remote cannot serve a pinned component (refused,
    tampered or absent blobs): a gate never runs on half of a lock."""
    from ..registry.remote import RemoteIntegrityError

    result, still_missing = fetch_lock(lock, registry, progress=progress)
    if result is not None and not result.ok:
        first = result.failed[0]
        raise RemoteIntegrityError(f"cannot fetch {first['asset']} from the remote: {first['error']}",
                                   where=result.url)
    return still_missing


def fetch_lock(lock: Any, registry: Any | None, *, progress: Any = None,
               remote_name: str | None = None) -> tuple[Any, list[str]]:
    """Pull every component of ``lock`` with a missing pinned file from the registry's remote.

    Each is pulled (``assetkit.registry.remote``: verified blob by blob), resolved again in this
    registry, and its path in ``lock`` is pointed there, so that ``verify_lock`` rehashes what
    arrived against the pins. Returns (the transfer result, or None when nothing was missing or
    no remote is configured; the sha256s still missing).
    """
    from ..registry.remote.transfer import pull_pinned
    from .lock import missing_blobs

    missing = set(missing_blobs(lock))
    if not missing:
        return None, []
    registry = registry if registry is not None else open_registry()
    needy = [c for c in lock.components if any(p.sha256 in missing for p in c.files)]
    result = pull_pinned(registry, [(c.name, [p.sha256 for p in c.files]) for c in needy], progress=progress,
                         remote_name=remote_name)
    if result is None or not result.ok:
        return result, sorted(missing)
    for component, asset in zip(needy, result.assets, strict=True):
        component.path = str(resolve(asset["name"], lock.spec.root, registry).path)
    return result, missing_blobs(lock)
