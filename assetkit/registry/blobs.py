"""The content-addressed blob store of the user's registry (not the built-in catalogue in ``registry/``).

A blob is any byte string, named by its sha256 (the Hugging Face Hub's LFS ids and Civitai's
hashes use the same digest). :class:`BlobStore` is the small interface every store offers, local
or remote; :class:`LocalBlobStore` keeps blobs as read-only files ``objects/sha256/ab/cdef...``.

Writing a blob: the bytes are hashed while they are copied into a temporary file inside
``objects/tmp/``, the digest is checked (when the caller knows it), the file is fsynced, made
read-only and renamed into place. Putting a blob that is already present is a no-op; two
processes putting the same blob at once both succeed (the rename is atomic and the bytes equal).
A process killed mid-write leaves only a temporary file, which ``gc`` removes.

Repair: a blob already present whose size on disk differs from the bytes being put (one ``stat``;
it was edited through a hard link, or truncated) is replaced by the new bytes, which hash to its
name. So adding the original file again repairs it; damage that keeps the size needs ``verify``
to be seen (and the blob removed before it is put again).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ..errors import AssetkitError

#: Bytes per read when copying or hashing.
CHUNK = 8 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobError(AssetkitError):
    """A blob is missing, corrupt, or did not hash to what the caller expected."""


def check_sha256(sha256: str) -> str:
    """Return ``sha256`` (64 lowercase hex digits) or raise: a blob name never reaches the file system
    unchecked, so no name can escape the store."""
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise BlobError(f"not a sha256 digest: {sha256!r}")
    return sha256


@runtime_checkable
class BlobStore(Protocol):
    """What the registry needs from a blob store (local files today, an object store for remotes)."""

    def has(self, sha256: str) -> bool: ...

    def put_file(self, path: str | os.PathLike[str], expected_sha256: str | None = None) -> str: ...

    def put_stream(self, chunks: Iterable[bytes], expected_sha256: str | None = None) -> str: ...

    def open(self, sha256: str) -> BinaryIO: ...

    def size(self, sha256: str) -> int: ...

    def verify(self, sha256: str) -> bool: ...

    def iter_blobs(self) -> Iterator[str]: ...


def hash_file(path: str | os.PathLike[str], chunk: int = CHUNK) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _all_zero(view: memoryview) -> bool:
    """Whether a large chunk is all zero bytes (random data is told apart at its first byte)."""
    n = len(view)
    if n < 1 << 16 or view[0] or view[-1] or view[n // 2]:
        return False
    import numpy as np

    return not np.frombuffer(view, dtype=np.uint8).any()


class LocalBlobStore:
    """Blobs as read-only (0444) files under ``root``: ``root/sha256/ab/cdef...`` plus ``root/tmp/``.

    ``root`` is the registry's ``objects/`` folder.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        #: blobs this object replaced because their size on disk was wrong (see the module docstring)
        self.repaired: list[str] = []

    # ---- naming ----------------------------------------------------------------------------
    def path(self, sha256: str) -> Path:
        """Where blob ``sha256`` lives (whether or not it is there)."""
        check_sha256(sha256)
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    # ---- reading ---------------------------------------------------------------------------
    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def has_size(self, sha256: str, size: int) -> bool:
        """Whether the blob is present with ``size`` bytes (a ``stat``, no reading)."""
        try:
            st = self.path(sha256).stat()
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self.path(sha256), "rb")
        except FileNotFoundError:
            raise BlobError(f"blob {sha256} is missing from the store", where=str(self.root)) from None

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise BlobError(f"blob {sha256} is missing from the store", where=str(self.root)) from None

    def verify(self, sha256: str) -> bool:
        """True when the blob is present and its bytes hash to its name."""
        path = self.path(sha256)
        try:
            return hash_file(path) == sha256
        except FileNotFoundError:
            return False

    def iter_blobs(self) -> Iterator[str]:
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for prefix in sorted(os.listdir(base)):
            folder = base / prefix
            if len(prefix) != 2 or not folder.is_dir():
                continue
            for rest in sorted(os.listdir(folder)):
                name = prefix + rest
                if _SHA256.fullmatch(name):
                    yield name

    def iter_temporary(self) -> Iterator[Path]:
        """Leftover temporary files (of interrupted writes)."""
        if self.tmp.is_dir():
            for entry in os.scandir(self.tmp):
                if entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)

    # ---- writing ---------------------------------------------------------------------------
    def put_file(self, path: str | os.PathLike[str], expected_sha256: str | None = None) -> str:
        """Copy a file in (hashing while copying); a no-op when ``expected_sha256`` is already stored
        with the file's size (a stored blob of another size is damaged: it is replaced)."""
        if expected_sha256 is not None and self.has(check_sha256(expected_sha256)):
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                return expected_sha256  # present, and nothing to repair it with
            if self.has_size(expected_sha256, size):
                return expected_sha256
        with open(path, "rb") as fh:
            return self._write(iter(lambda: fh.read(CHUNK), b""), expected_sha256)

    def put_stream(self, chunks: Iterable[bytes], expected_sha256: str | None = None) -> str:
        """Store the concatenation of ``chunks``; returns its sha256. Raises :class:`BlobError`
        when ``expected_sha256`` is given and the bytes hash to something else (nothing is kept)."""
        if expected_sha256 is not None and self.has(check_sha256(expected_sha256)):
            return expected_sha256
        return self._write(chunks, expected_sha256)

    def _write(self, chunks: Iterable[bytes], expected_sha256: str | None) -> str:
        """Hash ``chunks`` into a temporary file, check the digest, place it (:meth:`_place`)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        temp = self.tmp / f"{secrets.token_hex(8)}.part"
        digest = hashlib.sha256()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                total = 0
                for chunk in chunks:
                    digest.update(chunk)
                    view = memoryview(chunk).cast("B")
                    total += len(view)
                    if _all_zero(view):  # leave a hole: zero-filled tensors cost no disk space
                        out.seek(len(view), os.SEEK_CUR)
                        continue
                    while view:
                        written = out.write(view)
                        view = view[written:]
                out.truncate(total)
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise BlobError(f"content hashes to {sha256}, expected {expected_sha256}")
            self._place(temp, sha256)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return sha256

    def put_bytes(self, data: bytes) -> str:
        return self.put_stream([data])

    def _place(self, temp: Path, sha256: str) -> None:
        """Rename the verified ``temp`` in as blob ``sha256``, unless that blob is there already with the
        same size; one of another size is damaged and is replaced (recorded in :attr:`repaired`)."""
        dest = self.path(sha256)
        if self.has_size(sha256, os.stat(temp).st_size):
            return
        if dest.is_file():
            self.repaired.append(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temp, 0o444)
        os.replace(temp, dest)  # atomic; a concurrent writer of the same blob wrote the same bytes
        with contextlib.suppress(OSError):
            fd = os.open(dest.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def delete(self, sha256: str) -> bool:
        """Remove one blob file (gc only). Refuses anything that is not a plain file of the store."""
        path = self.path(sha256)
        if path.is_symlink() or not path.is_file():
            return False
        os.unlink(path)
        return True
