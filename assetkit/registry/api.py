"""``Registry``: the Python API of the user's local registry (the CLI ``assetkit registry`` is a thin
loop over it). The built-in, read-only catalogue lives in the top-level ``registry/`` folder and is
not this: this is where the user's own assets are stored.

Root: the ``root`` argument, else ``$ASSETKIT_HOME``, else the platform's user data directory
(``platformdirs.user_data_dir("assetkit")``). Under it: ``objects/`` (blobs), ``index.sqlite``,
``tmp/`` (conversions in progress), ``views/`` (what :meth:`Registry.path` hands out), ``lock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import AssetkitError
from . import index as _index
from .add import SPLITTABLE, AddResult, _Planned, add_path, check_id, check_name, not_split_note
from .blobs import LocalBlobStore
from .hashes import MIN_PREFIX, hash_query, is_hash_prefix, is_hex
from .locks import RegistryLock
from .records import AssetRecord, FileRecord

#: hash algorithms ``find`` and ``resolve`` look in, most specific first
HASH_ALGOS = ("sha256", "autov2", "autov1", "tensor_sha256", "source_sha256", "canonical_sha256")


class NotFoundError(AssetkitError):
    """No asset has that name, alias or hash."""


def default_root() -> Path:
    env = os.environ.get("ASSETKIT_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("assetkit", appauthor=False))


class Registry:
    """The user's registry at ``root`` (created on first use)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AssetkitError(f"cannot create the registry folder: {exc.strerror or exc}", where=str(self.root)) \
                from None
        if not self.root.is_dir():
            raise AssetkitError("registry root is not a folder", where=str(self.root))
        self.store = LocalBlobStore(self.root / "objects")
        self.tmp = self.root / "tmp"
        self.views = self.root / "views"
        self.lock = RegistryLock(self.root / "lock")
        self._conn: sqlite3.Connection | None = None

    # ---- plumbing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        if self._conn is None:
            self._conn = _index.connect(self.root / "index.sqlite")
        yield self._conn

    @property
    def conn(self) -> sqlite3.Connection:
        with self.connection() as conn:
            return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _name_taken(self, name: str) -> bool:
        return _name_refusal(self.conn, name) is not None

    def _name_refusal(self, name: str) -> str | None:
        return _name_refusal(self.conn, name)

    def _find_own(self, value: str, algos: Iterable[str]) -> AssetRecord | None:
        """An asset added on its own (not a part of another) with that hash."""
        marks = ",".join("?" * len(tuple(algos)))
        row = self.conn.execute(
            f"SELECT a.id FROM hashes h JOIN assets a ON a.id = h.asset_id WHERE h.value = ? AND h.algo IN ({marks}) "
            "AND a.auto = 0 AND (h.relpath = '' OR a.source_format != 'diffusers') ORDER BY a.id LIMIT 1",
            (value, *algos)).fetchone()
        if row is None and "sha256" in algos:
            row = self.conn.execute("SELECT id FROM assets WHERE sha256 = ? AND auto = 0 ORDER BY id LIMIT 1",
                                    (value,)).fetchone()
        return self.get(row[0]) if row else None

    # ---- writing ---------------------------------------------------------------------------
    def add(self, path: str | os.PathLike[str], *, name: str | None = None, tags: Iterable[str] = (),
            description: str = "", kind: str | None = None, family: str | None = None,
            config: str | os.PathLike[str] | None = None, progress: Any = None) -> AddResult:
        """Add a file or folder (see :mod:`assetkit.registry.add`); ``config``: a diffusers folder whose
        configs split a single file (default: the catalogue's)."""
        with self.lock.shared():
            return add_path(self, path, name=name, tags=tags, description=description, kind=kind, family=family,
                            progress=progress, config=config)

    def _insert(self, planned: _Planned) -> AssetRecord:
        with self.lock.shared():
            for plan in [planned, *planned.components.values()]:
                for sha in plan.blobs:
                    if not self.store.has(sha):
                        raise AssetkitError(f"blob {sha} vanished from the store before it was indexed")
            with _index.transaction(self.conn) as conn:
                if not planned.auto:
                    same = conn.execute("SELECT id FROM assets WHERE sha256 = ? AND auto = 0 AND source_format = ? "
                                        "ORDER BY id LIMIT 1", (planned.sha256, planned.source_format)).fetchone()
                    if same is not None:  # a concurrent add of the same bytes won the race
                        planned.existing = True
                        return self.get(same[0])
                component_ids: dict[str, int] = {}
                for role, comp in planned.components.items():
                    row = conn.execute("SELECT id FROM assets WHERE content_key = ? AND auto = 1 LIMIT 1",
                                       (comp.content_key,)).fetchone()
                    if row is not None:
                        component_ids[role] = row[0]
                        comp.reused = True
                        alias = _free_name(conn, comp.name)
                        conn.execute("INSERT OR IGNORE INTO aliases (alias, asset_id) VALUES (?, ?)", (alias, row[0]))
                    else:
                        comp.name = _free_name(conn, comp.name)
                        component_ids[role] = self._insert_row(conn, comp)
                refusal = _name_refusal(conn, planned.name)
                if refusal is not None:
                    if planned.explicit_name:
                        raise AssetkitError(f"{refusal}; choose another with --name")
                    planned.name = _free_name(conn, planned.name)
                asset_id = self._insert_row(conn, planned)
                for role, cid in component_ids.items():
                    conn.execute("INSERT INTO components (pipeline_id, role, component_id) VALUES (?, ?, ?)",
                                 (asset_id, role, cid))
        return self.get(asset_id)

    @staticmethod
    def _insert_row(conn: sqlite3.Connection, p: _Planned) -> int:
        now = time.time()
        for sha, size in p.blobs.items():
            conn.execute("INSERT OR IGNORE INTO blobs (sha256, size, created) VALUES (?, ?, ?)", (sha, size, now))
        cur = conn.execute(
            "INSERT INTO assets (name, kind, family, variant, prediction_type, layout, source_format, storage, sha256,"
            " size, description, probe, overrides, fingerprint, canonical_sha256, content_key, auto, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (p.name, p.kind, p.family, p.variant, p.prediction_type, p.layout, p.source_format, p.storage, p.sha256,
             p.size, p.description, json.dumps(p.probe, default=str), json.dumps(p.overrides), p.fingerprint,
             p.canonical, p.content_key, int(p.auto), now))
        asset_id = cur.lastrowid
        for f in p.files:
            conn.execute("INSERT INTO files (asset_id, relpath, sha256, size, blob, recipe) VALUES (?, ?, ?, ?, ?, ?)",
                         (asset_id, f.relpath, f.sha256, f.size, f.blob,
                          json.dumps(f.recipe) if f.recipe is not None else None))
        for sha in p.blobs:
            conn.execute("INSERT OR IGNORE INTO refs (asset_id, blob) VALUES (?, ?)", (asset_id, sha))
        for algo, value, relpath in p.hashes:
            conn.execute("INSERT OR IGNORE INTO hashes (asset_id, algo, value, relpath) VALUES (?, ?, ?, ?)",
                         (asset_id, algo, value, relpath))
        for tag in p.tags:
            conn.execute("INSERT OR IGNORE INTO tags (asset_id, tag) VALUES (?, ?)", (asset_id, tag))
        return asset_id

    def rm(self, name_or_hash: str) -> list[str]:
        """Remove an asset from the index (and its parts no other pipeline uses). Blobs stay until
        ``gc``. Returns the names removed. A component in use by a pipeline is refused."""
        record = self.resolve(name_or_hash)
        users = self._users(record.id)
        if users:
            raise AssetkitError(f"{record.name} is a component of {', '.join(users)}; remove "
                                f"{'that' if len(users) == 1 else 'those'} first")
        removed = [record.name]
        with _index.transaction(self.conn) as conn:
            parts = [r[0] for r in conn.execute("SELECT component_id FROM components WHERE pipeline_id = ?",
                                                (record.id,))]
            conn.execute("DELETE FROM components WHERE pipeline_id = ?", (record.id,))
            conn.execute("DELETE FROM assets WHERE id = ?", (record.id,))
            for cid in parts:
                row = conn.execute("SELECT name, auto FROM assets WHERE id = ?", (cid,)).fetchone()
                in_use = conn.execute("SELECT 1 FROM components WHERE component_id = ?", (cid,)).fetchone()
                if row is not None and row["auto"] and in_use is None:
                    conn.execute("DELETE FROM assets WHERE id = ?", (cid,))
                    removed.append(row["name"])
        from .export import remove_view

        remove_view(self, record.id)
        return removed

    def tag(self, name_or_hash: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> AssetRecord:
        record = self.resolve(name_or_hash)
        with _index.transaction(self.conn) as conn:
            for tag in add:
                conn.execute("INSERT OR IGNORE INTO tags (asset_id, tag) VALUES (?, ?)", (record.id, check_name(tag, "tag")))
            for tag in remove:
                conn.execute("DELETE FROM tags WHERE asset_id = ? AND tag = ?", (record.id, tag))
        return self.get(record.id)

    def rename(self, name_or_hash: str, new_name: str) -> AssetRecord:
        record = self.resolve(name_or_hash)
        check_name(new_name)
        if new_name == record.name:
            return record  # nothing to do
        with _index.transaction(self.conn) as conn:
            refusal = _name_refusal(conn, new_name, own_id=record.id)
            if refusal is not None:
                raise AssetkitError(refusal)
            conn.execute("UPDATE assets SET name = ? WHERE id = ?", (new_name, record.id))
            for role, comp in record.components.items():  # its own parts follow the new name
                if comp == f"{record.name}.{role}" and not _name_used(conn, f"{new_name}.{role}"):
                    conn.execute("UPDATE assets SET name = ? WHERE name = ? AND auto = 1", (f"{new_name}.{role}", comp))
        return self.get(record.id)

    def describe(self, name_or_hash: str, description: str) -> AssetRecord:
        record = self.resolve(name_or_hash)
        with _index.transaction(self.conn) as conn:
            conn.execute("UPDATE assets SET description = ? WHERE id = ?", (description, record.id))
        return self.get(record.id)

    # ---- reading ---------------------------------------------------------------------------
    def get(self, asset_id: int) -> AssetRecord:
        conn = self.conn
        row = conn.execute("SELECT * FROM assets WHERE id = ?", (asset_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no asset with id {asset_id}")
        record = AssetRecord.from_row(row)
        record.files = [FileRecord(r["relpath"], r["sha256"], r["size"], r["blob"],
                                   json.loads(r["recipe"]) if r["recipe"] else None)
                        for r in conn.execute("SELECT * FROM files WHERE asset_id = ? ORDER BY relpath", (asset_id,))]
        record.tags = [r[0] for r in conn.execute("SELECT tag FROM tags WHERE asset_id = ? ORDER BY tag", (asset_id,))]
        record.aliases = [r[0] for r in conn.execute("SELECT alias FROM aliases WHERE asset_id = ? ORDER BY alias",
                                                     (asset_id,))]
        for r in conn.execute("SELECT algo, value FROM hashes WHERE asset_id = ? ORDER BY algo, relpath", (asset_id,)):
            values = record.hashes.setdefault(r["algo"], [])
            if r["value"] not in values:
                values.append(r["value"])
        record.components = {r["role"]: r["name"] for r in conn.execute(
            "SELECT c.role, a.name FROM components c JOIN assets a ON a.id = c.component_id WHERE c.pipeline_id = ? "
            "ORDER BY c.role", (asset_id,))}
        return record

    def resolve(self, name_or_hash: str) -> AssetRecord:
        """An asset by name, alias, ``#id``, or hash (sha256 of the asset or of any of its files,
        AutoV1, AutoV2, tensor-data hash, a pickle source's sha256), or an unambiguous prefix of one."""
        conn = self.conn
        key = str(name_or_hash).strip()
        row = conn.execute("SELECT id FROM assets WHERE name = ?", (key,)).fetchone() or \
            conn.execute("SELECT asset_id FROM aliases WHERE alias = ?", (key,)).fetchone()
        if row is None and key.startswith("#") and key[1:].isdigit():
            row = conn.execute("SELECT id FROM assets WHERE id = ?", (int(key[1:]),)).fetchone()
        if row is not None:
            return self.get(row[0])
        matches = self._hash_matches(key.lower())
        ids = sorted({m[0] for m in matches})
        if not ids:
            raise NotFoundError(f"no asset named or hashed {key!r}")
        own = [i for i in ids if not self.conn.execute("SELECT auto FROM assets WHERE id = ?", (i,)).fetchone()[0]]
        if len(ids) > 1 and len(own) == 1:
            return self.get(own[0])
        if len(ids) > 1:
            names = ", ".join(self.get(i).name for i in ids[:5])
            raise AssetkitError(f"{key!r} is ambiguous: it matches {len(ids)} assets ({names})")
        return self.get(ids[0])

    def _hash_matches(self, value: str) -> list[tuple[int, str, str, str]]:
        if not is_hex(value):
            return []
        rows = self.conn.execute("SELECT asset_id, algo, value, relpath FROM hashes WHERE value = ?", (value,)).fetchall()
        if not rows and len(value) >= MIN_PREFIX:
            rows = self.conn.execute("SELECT asset_id, algo, value, relpath FROM hashes WHERE value >= ? AND value < ?",
                                     (value, value + "g")).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def find(self, value: str) -> list[dict[str, Any]]:
        """Every asset holding a hash equal to (or starting with) ``value``, hex digits, at least
        :data:`~assetkit.registry.hashes.MIN_PREFIX` of them (else a usage error):
        ``{"asset", "algo", "value", "relpath"}`` dicts."""
        out = []
        for asset_id, algo, full, relpath in self._hash_matches(hash_query(value)):
            record = self.get(asset_id)
            out.append({"asset": record.name, "id": asset_id, "kind": record.kind, "family": record.family,
                        "algo": algo, "value": full, "relpath": relpath, "auto": record.auto})
        return out

    def ls(self, *, kind: str | None = None, family: str | None = None, tag: str | None = None,
           pattern: str | None = None, include_parts: bool = False) -> list[dict[str, Any]]:
        """Summaries of the assets (components of pipelines only with ``include_parts``), by name."""
        from ..ids import Family, Kind

        check_id(kind, Kind, "kind")
        check_id(family, Family, "family")
        where, args = ["a.auto = 0"] if not include_parts else [], []
        for clause, value in (("a.kind = ?", kind), ("a.family = ?", family),
                              ("a.id IN (SELECT asset_id FROM tags WHERE tag = ?)", tag), ("a.name GLOB ?", pattern)):
            if value:
                where.append(clause)
                args.append(value)
        sql = ("SELECT a.id, a.name, a.kind, a.family, a.size, a.sha256, a.storage, a.auto, "
               "(SELECT group_concat(tag, ',') FROM tags t WHERE t.asset_id = a.id) AS tags FROM assets a"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.name")
        return [{"id": r["id"], "name": r["name"], "kind": r["kind"], "family": r["family"], "size": r["size"],
                 "sha256": r["sha256"], "storage": r["storage"], "auto": bool(r["auto"]),
                 "tags": sorted(r["tags"].split(",")) if r["tags"] else []}
                for r in self.conn.execute(sql, args)]

    def _users(self, asset_id: int) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT a.name FROM components c JOIN assets a ON a.id = c.pipeline_id WHERE c.component_id = ? "
            "ORDER BY a.name", (asset_id,))]

    def show(self, name_or_hash: str) -> dict[str, Any]:
        """Everything known about an asset: the record, the pipelines using it, what it shares."""
        record = self.resolve(name_or_hash)
        doc = record.to_dict()
        doc["used_by"] = self._users(record.id)
        doc["blobs"] = self._blobs_of(record.id)
        doc["shares"] = self._shares(record)
        doc["same_weights"] = self._same_weights(record)
        if record.source_format != "diffusers" and not record.components and (
                (record.storage == "whole" and record.kind == "pipeline")
                or (record.kind in SPLITTABLE and record.kind != "pipeline" and record.layout == "original")):
            doc["note"] = not_split_note(record.kind, record.family)
        return doc

    def _blobs_of(self, asset_id: int) -> list[str]:
        """Every blob an asset needs, its components' included."""
        rows = self.conn.execute(
            "SELECT blob FROM refs WHERE asset_id = ? UNION SELECT r.blob FROM refs r JOIN components c "
            "ON c.component_id = r.asset_id WHERE c.pipeline_id = ? ORDER BY 1", (asset_id, asset_id))
        return [r[0] for r in rows]

    def _damaged(self, record: AssetRecord) -> list[str]:
        """Blobs the asset needs that are missing from the store or whose size on disk is not the
        index's (one ``stat`` each): adding the original again replaces them."""
        blobs = self._blobs_of(record.id)
        if not blobs:
            return []
        sizes = {r[0]: r[1] for r in self.conn.execute(
            f"SELECT sha256, size FROM blobs WHERE sha256 IN ({','.join('?' * len(blobs))})", blobs)}
        return [sha for sha in blobs if not self.store.has_size(sha, sizes.get(sha, -1))]

    def _shares(self, record: AssetRecord) -> list[dict[str, Any]]:
        blobs = self._blobs_of(record.id)
        if not blobs:
            return []
        marks = ",".join("?" * len(blobs))
        rows = self.conn.execute(
            f"SELECT r.blob, b.size, a.id, a.name FROM refs r JOIN assets a ON a.id = r.asset_id JOIN blobs b "
            f"ON b.sha256 = r.blob WHERE r.blob IN ({marks}) AND a.id != ? ORDER BY a.name", (*blobs, record.id))
        own_parts = {r[0] for r in self.conn.execute("SELECT component_id FROM components WHERE pipeline_id = ?",
                                                     (record.id,))}
        shared: dict[str, dict[str, Any]] = {}
        for _blob, size, other_id, other_name in rows:
            if other_id in own_parts:
                continue
            users = self._users(other_id)
            label = other_name if not users else f"{other_name} (in {', '.join(users)})"
            entry = shared.setdefault(label, {"asset": other_name, "used_by": users, "blobs": 0, "bytes": 0})
            entry["blobs"] += 1
            entry["bytes"] += size
        return list(shared.values())

    def _same_weights(self, record: AssetRecord) -> list[dict[str, Any]]:
        """Assets (or components) with the same dtype-invariant fingerprint but other bytes."""
        prints = {record.fingerprint} if record.fingerprint else set()
        for role_name in record.components.values():
            row = self.conn.execute("SELECT fingerprint FROM assets WHERE name = ?", (role_name,)).fetchone()
            if row and row[0]:
                prints.add(row[0])
        out = []
        mine_ids = {record.id, *(r[0] for r in self.conn.execute(
            "SELECT component_id FROM components WHERE pipeline_id = ?", (record.id,)))}
        marks = ",".join("?" * len(mine_ids))
        mine_blobs = {r[0] for r in self.conn.execute(
            f"SELECT canonical_sha256 FROM assets WHERE id IN ({marks})", tuple(mine_ids)) if r[0]}
        for fp in sorted(prints):
            seen: set[str] = set()
            for r in self.conn.execute("SELECT id, name, canonical_sha256, probe FROM assets WHERE fingerprint = ? "
                                       "ORDER BY auto, name", (fp,)):
                if r["id"] in mine_ids or r["canonical_sha256"] in mine_blobs or r["canonical_sha256"] in seen:
                    continue  # itself, the very same bytes (reported under "shares"), or said already
                seen.add(r["canonical_sha256"])
                dtypes = _dtypes_of(json.loads(r["probe"]))
                out.append({"asset": r["name"], "used_by": self._users(r["id"]), "dtypes": dtypes,
                            "note": f"same weights as {r['name']}, stored in {'/'.join(dtypes) or '?'} there"})
        return out

    # ---- manifests (for remotes) -----------------------------------------------------------
    def manifest(self, name_or_id: str | int) -> dict[str, Any]:
        """A JSON-able description of an asset that :meth:`import_manifest` recreates elsewhere once
        the blobs listed under ``blobs`` are in that store."""
        record = self.get(name_or_id) if isinstance(name_or_id, int) else self.resolve(name_or_id)
        return self._manifest(record)

    def _manifest(self, record: AssetRecord) -> dict[str, Any]:
        conn = self.conn
        row = conn.execute("SELECT content_key FROM assets WHERE id = ?", (record.id,)).fetchone()
        hashes = [{"algo": r[0], "value": r[1], "relpath": r[2]} for r in conn.execute(
            "SELECT algo, value, relpath FROM hashes WHERE asset_id = ? ORDER BY algo, value, relpath", (record.id,))]
        own = [r[0] for r in conn.execute("SELECT blob FROM refs WHERE asset_id = ? ORDER BY blob", (record.id,))]
        sizes = {r[0]: r[1] for r in conn.execute(
            f"SELECT sha256, size FROM blobs WHERE sha256 IN ({','.join('?' * len(own))})", own)} if own else {}
        components = {}
        for role, _comp_name in record.components.items():
            comp = conn.execute("SELECT c.component_id FROM components c WHERE c.pipeline_id = ? AND c.role = ?",
                                (record.id, role)).fetchone()
            components[role] = self._manifest(self.get(comp[0]))
        blobs = sorted(set(own).union(*(set(c["blobs"]) for c in components.values())))
        return {
            "format": "assetkit-manifest", "version": 1,
            "name": record.name, "kind": record.kind, "family": record.family, "variant": record.variant,
            "prediction_type": record.prediction_type, "layout": record.layout,
            "source_format": record.source_format, "storage": record.storage, "sha256": record.sha256,
            "size": record.size, "description": record.description, "probe": record.probe,
            "overrides": record.overrides, "fingerprint": record.fingerprint,
            "canonical_sha256": record.canonical_sha256, "content_key": row["content_key"], "auto": record.auto,
            "tags": list(record.tags), "hashes": hashes, "files": [f.to_dict() for f in record.files],
            "recipe": next((f.recipe for f in record.files if f.recipe), None),
            "components": components, "own_blobs": {sha: sizes.get(sha, 0) for sha in own}, "blobs": blobs,
        }

    def import_manifest(self, manifest: dict[str, Any]) -> AssetRecord:
        """Recreate an asset from :meth:`manifest` output; its blobs must be in the store already.
        Idempotent: an asset with the same name and sha256 is returned as it is."""
        if manifest.get("format") != "assetkit-manifest" or manifest.get("version") != 1:
            raise AssetkitError("not an assetkit manifest (format/version)")
        missing = [sha for sha in manifest["blobs"] if not self.store.has(sha)]
        if missing:
            raise AssetkitError(f"{len(missing)} blob(s) of {manifest['name']} are not in the store "
                                f"(first: {missing[0]})")
        row = self.conn.execute("SELECT id, sha256 FROM assets WHERE name = ?", (manifest["name"],)).fetchone()
        if row is not None:
            if row["sha256"] == manifest["sha256"]:
                return self.get(row["id"])
            raise AssetkitError(f"the name {manifest['name']!r} is taken by other content")
        return self._insert(_planned_from_manifest(manifest))

    # ---- verbs in their own modules ---------------------------------------------------------
    def path(self, name_or_hash: str, layout: str | None = None) -> Path:
        """A path diffusers or a UI can load: a diffusers folder (``layout="diffusers"``) for a
        pipeline or component, a ``.safetensors`` file (``layout="file"``) for a single-file asset.
        ``None``: the folder where the asset has one (a pipeline, a component, a split file), else the file."""
        from .export import view_path

        record = self.resolve(name_or_hash)
        if layout is None:
            layout = "diffusers" if record.source_format == "diffusers" or record.components else "file"
        return view_path(self, record, layout)

    def export(self, name_or_hash: str, dest: str | os.PathLike[str], *, form: str = "auto",
               link: str | None = None, overwrite: bool = False) -> dict[str, Any]:
        from .export import export_asset

        return export_asset(self, self.resolve(name_or_hash), Path(dest), form=form, link=link, overwrite=overwrite)

    def export_tree(self, dest: str | os.PathLike[str], layout: str = "comfyui", link: str | None = None) -> dict[str, Any]:
        from .export import export_tree

        return export_tree(self, Path(dest), layout, link=link)

    def import_dir(self, folder: str | os.PathLike[str], *, layout: str = "auto", follow_links: bool = False,
                   tags: Iterable[str] = (), progress: Any = None) -> Any:
        from .importdir import import_dir

        return import_dir(self, Path(folder), layout=layout, follow_links=follow_links, tags=tuple(tags),
                          progress=progress)

    def verify(self, *, quick: bool = False) -> Any:
        from .verify import verify

        return verify(self, quick=quick)

    def gc(self, *, dry_run: bool = False, grace_seconds: float = 3600.0) -> Any:
        from .gc import gc

        return gc(self, dry_run=dry_run, grace_seconds=grace_seconds)

    def du(self) -> Any:
        from .du import du

        return du(self)


def _name_used(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM assets WHERE name = ? UNION SELECT 1 FROM aliases WHERE alias = ?",
                        (name, name)).fetchone() is not None


def _hash_owner(conn: sqlite3.Connection, name: str, own_id: int | None = None) -> str | None:
    """The name of another asset that ``name`` is a hash prefix of (6+ hex digits), or None: such a
    name would shadow that asset's hash for ``show``, ``path``... (names are looked up first)."""
    if not is_hash_prefix(name):
        return None
    value = name.lower()
    row = conn.execute("SELECT a.name FROM hashes h JOIN assets a ON a.id = h.asset_id WHERE h.value >= ? "
                       "AND h.value < ? AND a.id IS NOT ? ORDER BY a.auto, a.name LIMIT 1",
                       (value, value + "g", own_id)).fetchone()
    return row[0] if row else None


def _name_refusal(conn: sqlite3.Connection, name: str, own_id: int | None = None) -> str | None:
    """Why ``name`` cannot be given to an asset (``own_id``: the asset being renamed), or None."""
    if _name_used(conn, name):
        return f"the name {name!r} is taken"
    owner = _hash_owner(conn, name, own_id)
    if owner is not None:
        return (f"the name {name!r} looks like a hash prefix of {owner}: `assetkit registry show {name}` would "
                f"no longer find {owner}")
    return None


def _free_name(conn: sqlite3.Connection, wanted: str) -> str:
    if _name_refusal(conn, wanted) is None:
        return wanted
    n = 2
    while _name_refusal(conn, f"{wanted}-{n}") is not None:
        n += 1
    return f"{wanted}-{n}"


def _dtypes_of(probe: dict[str, Any]) -> list[str]:
    dtypes = set()
    for comp in (probe.get("components") or {}).values():
        dtypes.update((comp.get("dtypes") or {}).keys())
    if not dtypes:
        dtypes.update((probe.get("dtypes") or {}).keys())
    return sorted(dtypes)


def _planned_from_manifest(m: dict[str, Any]) -> _Planned:
    files = [FileRecord(f["relpath"], f["sha256"], f["size"], f.get("blob"), f.get("recipe")) for f in m["files"]]
    planned = _Planned(
        name=m["name"], kind=m["kind"], family=m["family"], probe=m["probe"], source_format=m["source_format"],
        storage=m["storage"], sha256=m["sha256"], size=m["size"], files=files,
        hashes=[(h["algo"], h["value"], h["relpath"]) for h in m["hashes"]], blobs=dict(m["own_blobs"]),
        description=m.get("description", ""), overrides=m.get("overrides", {}), fingerprint=m.get("fingerprint"),
        canonical=m.get("canonical_sha256"), content_key=m.get("content_key"), auto=bool(m.get("auto")),
        variant=m.get("variant"), prediction_type=m.get("prediction_type"), layout=m.get("layout"),
        tags=tuple(m.get("tags", ())))
    planned.components = {role: _planned_from_manifest(c) for role, c in m.get("components", {}).items()}
    return planned
