"""What the user's registry returns: plain dataclasses with ``to_dict()`` (the ``--json`` form).

These describe assets the user added (the index), not the built-in catalogue in ``registry/``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FileRecord:
    """One file of an asset as it was added: its path inside the asset, sha256, size, and how it is
    stored (``blob``: the whole file is one blob; otherwise ``recipe`` rebuilds it byte for byte)."""

    relpath: str
    sha256: str
    size: int
    blob: str | None = None
    recipe: dict[str, Any] | None = None

    @property
    def blobs(self) -> list[str]:
        """Every blob this file needs."""
        if self.blob is not None:
            return [self.blob]
        from .recipe import recipe_blobs

        return recipe_blobs(self.recipe or {})

    def to_dict(self) -> dict[str, Any]:
        return {"relpath": self.relpath, "sha256": self.sha256, "size": self.size, "blob": self.blob,
                "recipe": self.recipe}


@dataclass
class AssetRecord:
    """One asset of the registry (a pipeline, a component, a LoRA, an embedding...).

    ``sha256`` is that of the file as added (a folder: of its sorted ``relpath sha256`` list);
    ``files`` lists each file with its own sha256; ``components`` maps a role (``vae``) to the
    component asset's name for a pipeline.
    """

    id: int
    name: str
    kind: str
    family: str | None
    variant: str | None
    prediction_type: str | None
    layout: str | None
    source_format: str
    storage: str
    sha256: str
    size: int
    description: str
    probe: dict[str, Any]
    overrides: dict[str, Any]
    fingerprint: str | None
    canonical_sha256: str | None
    auto: bool
    created: float
    files: list[FileRecord] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    hashes: dict[str, list[str]] = field(default_factory=dict)
    components: dict[str, str] = field(default_factory=dict)

    @property
    def autov2(self) -> str:
        return self.sha256[:10]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AssetRecord:
        return cls(id=row["id"], name=row["name"], kind=row["kind"], family=row["family"], variant=row["variant"],
                   prediction_type=row["prediction_type"], layout=row["layout"],
                   source_format=row["source_format"], storage=row["storage"], sha256=row["sha256"],
                   size=row["size"], description=row["description"], probe=json.loads(row["probe"]),
                   overrides=json.loads(row["overrides"]), fingerprint=row["fingerprint"],
                   canonical_sha256=row["canonical_sha256"], auto=bool(row["auto"]), created=row["created"])

    def summary(self) -> dict[str, Any]:
        """The short form ``ls`` prints."""
        return {"id": self.id, "name": self.name, "kind": self.kind, "family": self.family,
                "size": self.size, "sha256": self.sha256, "tags": list(self.tags), "storage": self.storage}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "kind": self.kind, "family": self.family, "variant": self.variant,
            "prediction_type": self.prediction_type, "layout": self.layout, "source_format": self.source_format,
            "storage": self.storage, "sha256": self.sha256, "autov2": self.autov2, "size": self.size,
            "description": self.description, "tags": list(self.tags), "aliases": list(self.aliases),
            "hashes": {k: list(v) for k, v in self.hashes.items()}, "overrides": dict(self.overrides),
            "fingerprint": self.fingerprint, "canonical_sha256": self.canonical_sha256, "auto": self.auto,
            "created": self.created, "components": dict(self.components),
            "files": [f.to_dict() for f in self.files], "probe": self.probe,
        }
