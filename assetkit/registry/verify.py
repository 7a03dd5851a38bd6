"""``verify``: rehash the user's registry. Every blob an index row references must be in the store
and hash to its name; the index itself must pass SQLite's integrity and foreign-key checks; every
recipe must only read blobs the asset references. Problems are :class:`~assetkit.findings.Finding`
objects (exit 1 from the CLI when any is an error)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..findings import Finding
from .recipe import recipe_blobs

if TYPE_CHECKING:
    from .api import Registry


#: how to repair a missing blob or one of the wrong size (``add`` stores such a blob again)
READD = "to repair it, add the original file again (`assetkit registry add PATH`)"
#: how to repair a blob of the right size and the wrong bytes (``add`` checks sizes only)
REMOVE_READD = ("adding the original again does not notice damage that keeps the size: remove the assets "
                "that need it (`assetkit registry rm NAME`), run `assetkit registry gc`, then add the "
                "original files again")


@dataclass
class VerifyReport:
    blobs: int = 0
    bytes: int = 0
    assets: int = 0
    leftovers: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.failing for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "blobs": self.blobs, "bytes": self.bytes, "assets": self.assets,
                "leftovers": self.leftovers, "findings": [f.to_dict() for f in self.findings]}


def verify(reg: Registry, *, quick: bool = False) -> VerifyReport:
    """Check everything; ``quick`` compares sizes instead of rehashing."""
    report = VerifyReport()
    conn = reg.conn
    for row in conn.execute("PRAGMA integrity_check"):
        if row[0] != "ok":
            report.findings.append(Finding("index-corrupt", "error", f"SQLite integrity check: {row[0]}", "index.sqlite"))
    for row in conn.execute("PRAGMA foreign_key_check"):
        report.findings.append(Finding("index-dangling", "error", f"row {row[1]} of {row[0]} references a missing "
                                       f"{row[2]} row", "index.sqlite"))
    users: dict[str, list[str]] = {}
    for blob, name in conn.execute("SELECT r.blob, a.name FROM refs r JOIN assets a ON a.id = r.asset_id"):
        users.setdefault(blob, []).append(name)
    for sha, size in conn.execute("SELECT sha256, size FROM blobs ORDER BY sha256").fetchall():
        report.blobs += 1
        report.bytes += size
        who = ", ".join(sorted(users.get(sha, []))[:3]) or "no asset (gc removes it)"
        path = reg.store.path(sha)
        if not path.is_file():
            report.findings.append(Finding("blob-missing", "error", f"blob {sha} is missing (needed by {who}); "
                                           f"{READD}", str(path)))
            continue
        if path.stat().st_size != size:
            report.findings.append(Finding("blob-corrupt", "error", f"blob {sha} has {path.stat().st_size} bytes, "
                                           f"the index says {size} (needed by {who}); {READD}", str(path)))
            continue
        if not quick and not reg.store.verify(sha):
            report.findings.append(Finding("blob-corrupt", "error", f"blob {sha} does not hash to its name "
                                           f"(needed by {who}); {REMOVE_READD}", str(path)))
    for asset_id, name in conn.execute("SELECT id, name FROM assets").fetchall():
        report.assets += 1
        refs = {r[0] for r in conn.execute("SELECT blob FROM refs WHERE asset_id = ?", (asset_id,))}
        for relpath, blob, recipe in conn.execute("SELECT relpath, blob, recipe FROM files WHERE asset_id = ?",
                                                  (asset_id,)).fetchall():
            needed = [blob] if blob else recipe_blobs(json.loads(recipe or "{}"))
            for sha in needed:
                if sha not in refs:
                    report.findings.append(Finding("file-unreferenced-blob", "error", f"{relpath} needs blob {sha}, "
                                                   "which the asset does not reference", name))
    report.leftovers = sum(1 for _ in reg.store.iter_temporary())
    if report.leftovers:
        report.findings.append(Finding("leftovers", "info", f"{report.leftovers} temporary file(s) of interrupted "
                                       "writes; `gc` removes them", str(reg.store.tmp)))
    return report
