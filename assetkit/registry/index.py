"""The SQLite index of the user's registry: ``index.sqlite`` beside ``objects/``.

WAL mode, foreign keys on, a busy timeout so that concurrent processes wait for each other
instead of failing, and the schema versioned with ``PRAGMA user_version``: :data:`MIGRATIONS`
is an ordered list of small SQL scripts, each run once in its own transaction. No ORM.

A blob row is inserted only after the blob file is in the store, in the same transaction as the
rows that reference it, so no committed row ever points to a missing blob.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..errors import AssetkitError

#: Seconds a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 60.0

_V1 = """
CREATE TABLE blobs (
    sha256   TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    created  REAL NOT NULL
);
CREATE TABLE assets (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    family          TEXT,
    variant         TEXT,
    prediction_type TEXT,
    layout          TEXT,
    source_format   TEXT NOT NULL,
    storage         TEXT NOT NULL,          -- 'components' | 'canonical' | 'whole' | 'files'
    sha256          TEXT NOT NULL,          -- of the file as added (a folder: of its file list)
    size            INTEGER NOT NULL,       -- bytes as added
    description     TEXT NOT NULL DEFAULT '',
    probe           TEXT NOT NULL,          -- ProbeResult.to_dict() as JSON
    overrides       TEXT NOT NULL DEFAULT '{}',  -- --kind/--family given by the user, with the probe's answer
    fingerprint     TEXT,                   -- dtype-invariant fingerprint of the tensors
    canonical_sha256 TEXT REFERENCES blobs(sha256),  -- the canonical tensor blob of a component
    content_key     TEXT,                   -- equal for two component assets with equal content
    auto            INTEGER NOT NULL DEFAULT 0,  -- created as a part of another asset, not added itself
    created         REAL NOT NULL
);
CREATE INDEX assets_content ON assets(content_key);
CREATE INDEX assets_kind ON assets(kind, family);
CREATE TABLE files (
    asset_id  INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    relpath   TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    size      INTEGER NOT NULL,
    blob      TEXT REFERENCES blobs(sha256),   -- stored whole, or NULL when rebuilt from a recipe
    recipe    TEXT,                            -- JSON (recipe.py), NULL when stored whole
    PRIMARY KEY (asset_id, relpath)
);
CREATE TABLE refs (                             -- every blob an asset needs directly
    asset_id  INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    blob      TEXT NOT NULL REFERENCES blobs(sha256),
    PRIMARY KEY (asset_id, blob)
);
CREATE INDEX refs_blob ON refs(blob);
CREATE TABLE components (
    pipeline_id  INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    role         TEXT NOT NULL,                 -- unet, vae, text_encoder, tokenizer, scheduler...
    component_id INTEGER NOT NULL REFERENCES assets(id),
    PRIMARY KEY (pipeline_id, role)
);
CREATE INDEX components_of ON components(component_id);
CREATE TABLE tags (
    asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    PRIMARY KEY (asset_id, tag)
);
CREATE TABLE aliases (
    alias    TEXT PRIMARY KEY,
    asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE
);
CREATE TABLE hashes (                           -- what `find` answers for
    asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    algo     TEXT NOT NULL,                     -- sha256, autov1, autov2, tensor_sha256, source_sha256
    value    TEXT NOT NULL,
    relpath  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (asset_id, algo, value, relpath)
);
CREATE INDEX hashes_value ON hashes(value);
CREATE TABLE hash_cache (                       -- re-adding an unchanged file never rehashes it
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    tensor_sha256 TEXT,
    autov1   TEXT,
    PRIMARY KEY (dev, ino, size, mtime_ns)
);
"""

#: Schema migrations: MIGRATIONS[i] takes user_version i to i + 1.
MIGRATIONS: list[str] = [_V1]
SCHEMA_VERSION = len(MIGRATIONS)


class IndexError_(AssetkitError):
    """The index cannot be opened or is newer than this assetkit."""


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating and migrating) the index at ``path``."""
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise IndexError_(f"cannot open the registry index: {exc}", where=str(path)) from None
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise IndexError_(f"not a registry index ({exc})", where=str(path)) from None
    return conn


def migrate(conn: sqlite3.Connection, where: Path | str = "") -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise IndexError_(f"the index has schema version {found}; this assetkit knows up to {SCHEMA_VERSION}",
                          where=str(where))
    version = found
    while version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # another process may have migrated while we waited for the write lock
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current == version:
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    return found


def _statements(script: str) -> Iterator[str]:
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if statement:
                yield statement
            buffer = ""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any exception, a kill leaves nothing)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
