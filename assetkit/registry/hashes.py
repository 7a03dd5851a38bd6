"""Hashes the user's registry records and answers ``find`` for.

* ``sha256``: of the whole file as added (the Hub's LFS id; Civitai's "SHA256").
* ``autov2``: A1111/Civitai short hash, the first 10 hex digits of the sha256.
* ``autov1``: A1111's old ``model_hash``: sha256 of the 64 KiB at offset 1 MiB, first 8 digits.
* ``tensor_sha256``: sha256 of a safetensors file's bytes after the header (kohya's
  ``sshs_model_hash``, ModelSpec's ``hash_sha256``; Civitai's AutoV3 is its first 12 digits).
* a dtype-invariant ``fingerprint`` of a set of tensors: names, shapes and a fixed sample of the
  values rounded to fp16, so the same weights stored in fp32 and in fp16 get the same fingerprint.

The hash cache (table ``hash_cache`` of the index) is keyed by (device, inode, size, mtime_ns):
re-adding or re-importing an unchanged file never reads it again.
"""

from __future__ import annotations

import hashlib
import os
import queue
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .blobs import CHUNK

AUTOV1_OFFSET, AUTOV1_LENGTH = 0x100000, 0x10000
#: hex digits a hash prefix needs (``find``, ``find --remote``, names that would shadow a prefix);
#: the shortest recorded hash, AutoV1, has 8
MIN_PREFIX = 6
_HEX = frozenset("0123456789abcdef")


def is_hex(value: str) -> bool:
    return bool(value) and set(value.lower()) <= _HEX


def is_hash_prefix(value: str) -> bool:
    """Whether ``value`` can be a hash query: hex digits, :data:`MIN_PREFIX` or more."""
    return len(value) >= MIN_PREFIX and is_hex(value)


def hash_query(value: str) -> str:
    """``value`` as ``find`` searches for it (lowercase), or a usage error: hashes are hex digits,
    and a prefix needs :data:`MIN_PREFIX` of them."""
    needle = str(value).strip().lower()
    from ..errors import AssetkitError

    if not is_hex(needle):
        raise AssetkitError(f"{value!r} is not a hash (hex digits only); to look an asset up by name, use "
                            "`assetkit registry show NAME`")
    if len(needle) < MIN_PREFIX:
        raise AssetkitError(f"{value!r} is too short: a hash prefix needs at least {MIN_PREFIX} hex digits "
                            f"(it has {len(needle)})")
    return needle


#: elements sampled per tensor for the fingerprint
FINGERPRINT_SAMPLES = 1024


@dataclass(frozen=True)
class FileHashes:
    sha256: str
    tensor_sha256: str | None
    autov1: str

    @property
    def autov2(self) -> str:
        return self.sha256[:10]

    def as_rows(self) -> list[tuple[str, str]]:
        rows = [("sha256", self.sha256), ("autov2", self.autov2), ("autov1", self.autov1)]
        if self.tensor_sha256:
            rows.append(("tensor_sha256", self.tensor_sha256))
        return rows


def autov1(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as fh:
        fh.seek(AUTOV1_OFFSET)
        return hashlib.sha256(fh.read(AUTOV1_LENGTH)).hexdigest()[:8]


def safetensors_data_start(path: str | os.PathLike[str]) -> int | None:
    """Offset of the first tensor byte of a safetensors file (8 + header length), None if not one."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8:
        return None
    return 8 + struct.unpack("<Q", head)[0]


class _Hasher(threading.Thread):
    """sha256 of the chunks fed to it, in its own thread (hashlib releases the GIL on big updates)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.digest = hashlib.sha256()
        self.chunks: queue.Queue[Any] = queue.Queue(maxsize=8)
        self.start()

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            self.digest.update(chunk)

    def feed(self, chunk: Any) -> None:
        self.chunks.put(chunk)

    def result(self) -> str:
        self.chunks.put(None)
        self.join()
        return self.digest.hexdigest()


def read_hashing(path: str | os.PathLike[str], data_start: int | None,
                 progress: Callable[[int], None] | None = None) -> tuple[Iterable[bytes], Callable[[], FileHashes]]:
    """The chunks of a file, hashing them on the way: ``(chunks, result)``; once ``chunks`` is
    consumed, ``result()`` gives the file's :class:`FileHashes`. The whole-file sha256 and the
    tensor-data sha256 run in two threads beside the reader."""
    whole = _Hasher()
    data = _Hasher() if data_start is not None else None
    done: dict[str, bool] = {"read": False}

    def chunks() -> Iterable[bytes]:
        offset = 0
        try:
            with open(path, "rb", buffering=0) as fh:
                while block := fh.read(CHUNK):
                    whole.feed(block)
                    if data is not None:
                        end = offset + len(block)
                        if end > data_start:
                            data.feed(block[max(0, data_start - offset):] if offset < data_start else block)
                    offset += len(block)
                    if progress is not None:
                        progress(len(block))
                    yield block
            done["read"] = True
        finally:
            if not done["read"]:
                whole.result()
                if data is not None:
                    data.result()

    def result() -> FileHashes:
        if not done["read"]:
            raise RuntimeError("read_hashing: the chunks were not consumed")
        return FileHashes(whole.result(), data.result() if data is not None else None, autov1(path))

    return chunks(), result


def hash_path(path: str | os.PathLike[str], data_start: int | None,
              progress: Callable[[int], None] | None = None) -> FileHashes:
    chunks, result = read_hashing(path, data_start, progress)
    for _ in chunks:
        pass
    return result()


# ---- the hash cache ---------------------------------------------------------------------------
def stat_key(path: str | os.PathLike[str]) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def cached_hashes(conn: sqlite3.Connection, path: Path) -> FileHashes | None:
    row = conn.execute("SELECT sha256, tensor_sha256, autov1 FROM hash_cache WHERE dev=? AND ino=? AND size=? "
                       "AND mtime_ns=?", stat_key(path)).fetchone()
    if row is None:
        return None
    return FileHashes(row["sha256"], row["tensor_sha256"], row["autov1"])


def remember_hashes(conn: sqlite3.Connection, path: Path, hashes: FileHashes,
                    key: tuple[int, int, int, int] | None = None) -> None:
    conn.execute("INSERT OR REPLACE INTO hash_cache (dev, ino, size, mtime_ns, sha256, tensor_sha256, autov1) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (*(key or stat_key(path)), hashes.sha256, hashes.tensor_sha256,
                                                  hashes.autov1))


def file_hashes(conn: sqlite3.Connection, path: Path, data_start: int | None,
                progress: Callable[[int], None] | None = None) -> FileHashes:
    """The file's hashes, from the cache when the file is unchanged, else by reading it once."""
    key = stat_key(path)
    hit = cached_hashes(conn, path)
    if hit is not None:
        if progress is not None:
            progress(key[2])
        return hit
    hashes = hash_path(path, data_start, progress)
    remember_hashes(conn, path, hashes, key)
    return hashes


# ---- dtype-invariant fingerprint --------------------------------------------------------------
def fingerprint(tensors: Iterable[tuple[str, str, tuple[int, ...], Callable[[], Any]]]) -> str:
    """Fingerprint of ``(name, dtype, shape, get_bytes)`` tensors that does not change with the
    floating precision: floats are sampled at fixed element indices and rounded to fp16 (as a cast
    fp32 -> fp16 rounds); other dtypes are sampled as they are. Names are sorted."""
    import numpy as np

    from ..convert import CASTABLE, cast_bytes
    from ..formats.dtypes import DTYPES

    digest = hashlib.sha256(b"assetkit-fingerprint-v1")
    for name, dtype, shape, get_bytes in sorted(tensors, key=lambda t: t[0]):
        numel = 1
        for dim in shape:
            numel *= dim
        floating = dtype in CASTABLE
        digest.update(f"{name}\0{list(shape)}\0{'float' if floating else dtype}\0".encode())
        if numel == 0:
            continue
        item = DTYPES[dtype].itemsize
        raw = memoryview(get_bytes()).cast("B")
        if item == 0 or len(raw) != numel * item:  # sub-byte dtypes: raw bytes
            digest.update(hashlib.sha256(raw).digest())
            continue
        index = np.unique(np.linspace(0, numel - 1, num=min(numel, FINGERPRINT_SAMPLES)).astype(np.int64))
        elements = np.frombuffer(raw, dtype=np.dtype((np.void, item)))[index]
        sample = elements.tobytes()
        if floating:
            sample = bytes(cast_bytes(sample, dtype, "F16"))
        digest.update(sample)
    return digest.hexdigest()
