"""``gc``: remove what no asset of the user's registry needs:

* blobs the index knows that no asset references any more (those of removed assets): at once,
  whatever their age;
* blob files the index does not know (an add killed before its transaction) and temporary files:
  only when older than the grace period (a concurrent add may be about to index them);
* views of removed assets: at once; abandoned view staging folders: after the grace period.

``gc`` takes the registry lock exclusively, so it waits for running adds. ``dry_run`` reports
without removing."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import index as _index

if TYPE_CHECKING:
    from .api import Registry


@dataclass
class GcReport:
    dry_run: bool
    blobs: list[str] = field(default_factory=list)
    bytes: int = 0
    temporary: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    kept_young: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "blobs_removed": len(self.blobs), "bytes_freed": self.bytes,
                "temporary_removed": len(self.temporary), "views_removed": len(self.views),
                "kept_younger_than_grace": self.kept_young, "blobs": list(self.blobs)}


def gc(reg: Registry, *, dry_run: bool = False, grace_seconds: float = 3600.0) -> GcReport:
    from .export import _remove_own_tree

    report = GcReport(dry_run)
    now = time.time()
    with reg.lock.exclusive():
        conn = reg.conn
        known = {r[0]: r[1] for r in conn.execute("SELECT sha256, size FROM blobs")}
        needed = {r[0] for r in conn.execute("SELECT DISTINCT blob FROM refs")}
        unreferenced = [sha for sha in known if sha not in needed]
        for sha in reg.store.iter_blobs():
            if sha in known:
                continue
            path = reg.store.path(sha)
            if now - path.stat().st_mtime < grace_seconds:
                report.kept_young += 1
                continue
            report.blobs.append(sha)
            report.bytes += path.stat().st_size
            if not dry_run:
                reg.store.delete(sha)
        if unreferenced:
            if not dry_run:
                with _index.transaction(conn):
                    for sha in unreferenced:
                        conn.execute("DELETE FROM blobs WHERE sha256 = ? AND sha256 NOT IN (SELECT blob FROM refs)",
                                     (sha,))
            for sha in unreferenced:
                report.blobs.append(sha)
                report.bytes += known[sha]
                if not dry_run and reg.store.has(sha):
                    reg.store.delete(sha)
        for folder in (reg.store.tmp, reg.tmp):
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime >= grace_seconds:
                    report.temporary.append(entry.path)
                    if not dry_run:
                        os.unlink(entry.path)
        if reg.views.is_dir():
            ids = {r[0] for r in conn.execute("SELECT id FROM assets")}
            for entry in os.scandir(reg.views):
                head = entry.name.split("-", 1)[0]
                stale = entry.name.startswith(".") and now - entry.stat(follow_symlinks=False).st_mtime >= grace_seconds
                if stale or (head.isdigit() and int(head) not in ids):
                    report.views.append(entry.path)
                    if not dry_run:
                        _remove_own_tree(reg.views / entry.name)
    return report
