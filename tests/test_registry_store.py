"""The blob store and the SQLite index of the registry, on real files."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from assetkit.registry import BlobError, BlobStore, LocalBlobStore
from assetkit.registry import index as idx


def test_put_hashes_while_copying_and_names_the_blob_by_sha256(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "objects")
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    assert isinstance(store, BlobStore)
    assert not store.has(want)
    assert store.put_file(src) == want
    path = tmp_path / "objects" / "sha256" / want[:2] / want[2:]
    assert path.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert store.has(want) and store.size(want) == src.stat().st_size and store.verify(want)
    assert list(store.iter_blobs()) == [want]
    with store.open(want) as fh:
        assert fh.read(5) == src.read_bytes()[:5]
    # present: a no-op that reads nothing (the source may even be gone)
    src.unlink()
    assert store.put_file(src, expected_sha256=want) == want
    assert list(store.iter_temporary()) == []


def test_wrong_expected_digest_keeps_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "objects")
    with pytest.raises(BlobError, match="expected"):
        store.put_stream([b"abc", b"def"], expected_sha256="0" * 64)
    assert list(store.iter_blobs()) == [] and list(store.iter_temporary()) == []
    assert store.put_stream([b"abc", b"def"]) == hashlib.sha256(b"abcdef").hexdigest()


def test_verify_sees_corruption_and_names_never_reach_the_disk_unchecked(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "objects")
    sha = store.put_bytes(b"hello")
    path = store.path(sha)
    os.chmod(path, 0o644)
    path.write_bytes(b"hellO")
    assert not store.verify(sha)
    for bad in ("../../etc/passwd", "ab", "A" * 64, "/" + "a" * 63):
        with pytest.raises(BlobError):
            store.path(bad)


def test_index_is_wal_with_foreign_keys_and_versioned(tmp_path: Path) -> None:
    conn = idx.connect(tmp_path / "index.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == idx.SCHEMA_VERSION
    with pytest.raises(sqlite3.IntegrityError):  # a reference to a blob row that does not exist
        conn.execute("INSERT INTO assets (name, kind, source_format, storage, sha256, size, probe, created, "
                     "canonical_sha256) VALUES ('x', 'vae', 'safetensors', 'whole', 'a', 1, '{}', 0, 'nope')")
    conn.close()
    # reopening migrates nothing; a newer schema is refused with one line
    again = idx.connect(tmp_path / "index.sqlite")
    again.execute(f"PRAGMA user_version = {idx.SCHEMA_VERSION + 1}")
    again.close()
    with pytest.raises(idx.IndexError_, match="schema version"):
        idx.connect(tmp_path / "index.sqlite")


def test_not_an_index_is_one_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "index.sqlite"
    bogus.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(idx.IndexError_, match="not a registry index"):
        idx.connect(bogus)


def test_zero_runs_become_holes_and_read_back_as_zeros(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "objects")
    chunks = [b"head", bytes(1 << 20), b"x" * 1000, bytes(1 << 20)]
    sha = store.put_stream(chunks)
    data = b"".join(chunks)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.path(sha).read_bytes() == data and store.verify(sha)
    assert store.path(sha).stat().st_blocks * 512 < len(data)  # sparse on this file system
