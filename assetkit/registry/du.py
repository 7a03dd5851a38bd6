"""``du``: space the user's registry uses, and what sharing saved, per asset and in total.

An asset's ``stored`` bytes are those of every blob it needs (its components' included);
``unique`` the part no other asset needs; ``shared`` the rest. ``saved`` in the totals is the
size of everything as added minus the bytes on disk: negative when little is shared, since every
canonical blob has its own header and each file's original header is kept beside it (to rebuild
the file byte for byte, and a split checkpoint gains configs); ``registry du`` then says that nothing was saved and by how much the store
is larger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Registry


@dataclass
class DuReport:
    assets: list[dict[str, Any]] = field(default_factory=list)
    disk_bytes: int = 0
    added_bytes: int = 0
    blobs: int = 0

    @property
    def saved_bytes(self) -> int:
        return self.added_bytes - self.disk_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"disk_bytes": self.disk_bytes, "added_bytes": self.added_bytes, "saved_bytes": self.saved_bytes,
                "blobs": self.blobs, "assets": list(self.assets)}


def du(reg: Registry) -> DuReport:
    conn = reg.conn
    report = DuReport()
    sizes = {r[0]: r[1] for r in conn.execute("SELECT sha256, size FROM blobs")}
    report.blobs = len(sizes)
    report.disk_bytes = sum(sizes.values())
    own: dict[int, set[str]] = {}
    for asset_id, blob in conn.execute("SELECT asset_id, blob FROM refs"):
        own.setdefault(asset_id, set()).add(blob)
    parts: dict[int, list[int]] = {}
    for pipeline_id, component_id in conn.execute("SELECT pipeline_id, component_id FROM components"):
        parts.setdefault(pipeline_id, []).append(component_id)
    top = conn.execute("SELECT id, name, kind, size FROM assets WHERE auto = 0 ORDER BY name").fetchall()
    needs: dict[int, set[str]] = {}
    for asset_id, *_ in top:
        blobs = set(own.get(asset_id, ()))
        for cid in parts.get(asset_id, ()):
            blobs |= own.get(cid, set())
        needs[asset_id] = blobs
    users: dict[str, int] = {}
    for blobs in needs.values():
        for sha in blobs:
            users[sha] = users.get(sha, 0) + 1
    for asset_id, name, kind, size in top:
        stored = sum(sizes.get(sha, 0) for sha in needs[asset_id])
        unique = sum(sizes.get(sha, 0) for sha in needs[asset_id] if users[sha] == 1)
        report.added_bytes += size
        report.assets.append({"name": name, "kind": kind, "added": size, "stored": stored, "unique": unique,
                              "shared": stored - unique})
    return report
