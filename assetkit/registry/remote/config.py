"""The remotes a registry knows: ``remotes.json`` in the registry root, written atomically.

Each entry is a :class:`~.url.RemoteSpec` (URL, endpoint, region, profile), never a credential.
The first remote added is the default until another is made default; ``--remote NAME`` picks one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import RemoteError
from .url import RemoteSpec, check_remote_name

CONFIG_NAME = "remotes.json"
_VERSION = 1


class RemoteConfig:
    """Add, list, remove and pick the remotes of the registry rooted at ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / CONFIG_NAME

    def _load(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": _VERSION, "default": None, "remotes": {}}
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise RemoteError(f"cannot read the remotes config ({exc})", where=str(self.path)) from None
        if not isinstance(document, dict) or not isinstance(document.get("remotes"), dict):
            raise RemoteError("remotes config is not a JSON object with 'remotes'", where=str(self.path))
        return document

    def _save(self, document: dict[str, Any]) -> None:
        from ...formats.atomic import atomic_write

        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path, overwrite=True) as out:
            out.write((json.dumps(document, indent=2, sort_keys=True) + "\n").encode())

    def remotes(self) -> dict[str, RemoteSpec]:
        return {name: RemoteSpec.from_dict(entry) for name, entry in sorted(self._load()["remotes"].items())}

    @property
    def default(self) -> str | None:
        return self._load().get("default")

    def add(self, name: str, spec: RemoteSpec, make_default: bool = False, replace: bool = False) -> RemoteSpec:
        check_remote_name(name)
        document = self._load()
        if name in document["remotes"] and not replace:
            raise RemoteError(f"remote {name!r} exists; remove it first (remote rm {name})")
        document["remotes"][name] = spec.to_dict()
        if make_default or not document.get("default"):
            document["default"] = name
        self._save(document)
        return spec

    def remove(self, name: str) -> RemoteSpec:
        document = self._load()
        if name not in document["remotes"]:
            raise RemoteError(f"no remote named {name!r}")
        spec = RemoteSpec.from_dict(document["remotes"].pop(name))
        if document.get("default") == name:
            document["default"] = next(iter(sorted(document["remotes"])), None)
        self._save(document)
        return spec

    def get(self, name: str | None = None) -> tuple[str, RemoteSpec]:
        """The named remote, else the default one; one clear error when there is none."""
        document = self._load()
        remotes = document["remotes"]
        if name is None:
            name = document.get("default")
            if not name:
                raise RemoteError("no remote configured; add one with: assetkit registry remote add NAME s3://bucket/prefix")
        if name not in remotes:
            known = ", ".join(sorted(remotes)) or "none"
            raise RemoteError(f"no remote named {name!r} (known: {known})")
        return name, RemoteSpec.from_dict(remotes[name])
