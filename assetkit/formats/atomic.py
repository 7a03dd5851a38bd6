"""Atomic file output: write to a temporary file beside the destination, fsync, rename into place.

Every file assetkit writes goes through here (DESIGN.md, "Nothing lost"): a failed or
interrupted command leaves the old state intact and no half-written file behind.

:class:`AtomicFile` is the object form (``commit()`` / ``discard()``), used by writers that
outlive a single ``with`` block; :func:`atomic_write` is the context-manager form. Output
folders are built in :func:`stage_folder` beside their destination and renamed into place by
:func:`place_folder` once complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import AssetkitError, OutputExistsError

#: Write buffer: small writes are batched, writes larger than this go straight to the OS uncopied.
DEFAULT_BUFFER_SIZE = 4 * 1024 * 1024

_TEMP_ATTEMPTS = 100


def check_destination(dest: Path, overwrite: bool = False) -> None:
    """Refuse a destination we cannot or must not write, before anything is written.

    Raises :class:`AssetkitError` when the folder is missing or ``dest`` is a folder, and
    :class:`OutputExistsError` when ``dest`` exists and ``overwrite`` is false.
    """
    dest = Path(dest)
    folder = dest.parent
    if not folder.is_dir():
        raise AssetkitError("output folder does not exist", where=str(folder))
    if dest.is_dir():
        raise AssetkitError("is a directory, not a file", where=str(dest))
    if not overwrite and (dest.exists() or dest.is_symlink()):
        raise OutputExistsError("exists; pass --overwrite to replace it", where=str(dest))


def temp_name(dest_name: str, token: str, pid: int) -> str:
    """``.<dest name>.<token>-<pid>.tmp``: hidden, beside the output, owned by process ``pid``."""
    return f".{dest_name}.{token}-{pid}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: keep its file
    return True


def remove_stale_temporaries(dest: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries a killed run (SIGKILL, power loss) left beside ``dest``.

    Only files of this module's own naming for this very output (``.<name>.<12 hex>-<pid>.tmp``)
    whose process is gone are removed; a running writer's file is kept. Returns what was removed.
    """
    dest = Path(dest)
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.[0-9a-f]{{12}}-(\d+)\.tmp$")
    removed: list[Path] = []
    try:
        names = os.listdir(dest.parent)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match is None or _pid_alive(int(match[1])):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest.parent / name)
            removed.append(dest.parent / name)
    return removed


def _os_error(action: str, exc: OSError, where: Path) -> AssetkitError:
    return AssetkitError(f"cannot {action}: {exc.strerror or exc}", where=str(where))


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable; platforms that cannot open folders (Windows) skip it."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A binary file that appears at ``dest`` only when :meth:`commit` succeeds.

    The data goes to ``.<dest name>.<random>-<pid>.tmp`` in the destination folder (same file system,
    so the final rename is atomic). :meth:`commit` flushes, fsyncs, renames into place and
    fsyncs the folder; :meth:`discard` removes the temporary file. Without ``overwrite`` an
    existing ``dest`` is refused up front and, should one appear meanwhile, again at commit
    (no-clobber hard link where the file system allows it).
    """

    def __init__(self, dest: str | os.PathLike[str], overwrite: bool = False,
                 buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        self.dest = Path(dest)
        self.overwrite = overwrite
        check_destination(self.dest, overwrite)
        fd, self.temp_path = self._create_temp()
        self.file: BinaryIO = os.fdopen(fd, "wb", buffering=buffer_size)
        self.done = False

    def _create_temp(self) -> tuple[int, Path]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        remove_stale_temporaries(self.dest)
        for _ in range(_TEMP_ATTEMPTS):
            temp = self.dest.parent / temp_name(self.dest.name, secrets.token_hex(6), os.getpid())
            try:
                # 0o666 so the umask applies as for any other new file (mkstemp would force 0o600).
                return os.open(temp, flags, 0o666), temp
            except FileExistsError:
                continue
            except OSError as exc:
                raise _os_error("create a file in the output folder", exc, self.dest.parent) from None
        raise AssetkitError("cannot create a temporary file in the output folder", where=str(self.dest.parent))

    def commit(self) -> None:
        """Flush, fsync and move the temporary file to ``dest``; on failure nothing is left behind."""
        if self.done:
            raise AssetkitError("output already committed or discarded", where=str(self.dest))
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self._place()
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise _os_error("write", exc, self.dest) from None
            raise
        self.done = True
        _fsync_folder(self.dest.parent)

    def _place(self) -> None:
        if self.overwrite:
            os.replace(self.temp_path, self.dest)
            return
        try:
            os.link(self.temp_path, self.dest)  # fails if dest appeared meanwhile: never clobber
        except FileExistsError:
            raise OutputExistsError("exists; pass --overwrite to replace it", where=str(self.dest)) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK,
                                 errno.ENOSYS, errno.EACCES):
                raise
            # No hard links here (FAT, some network file systems): check, then rename.
            if self.dest.exists() or self.dest.is_symlink():
                raise OutputExistsError("exists; pass --overwrite to replace it", where=str(self.dest)) from None
            os.replace(self.temp_path, self.dest)
            return
        os.unlink(self.temp_path)

    def discard(self) -> None:
        """Close and remove the temporary file (idempotent; ``dest`` is left untouched)."""
        self.done = True
        with contextlib.suppress(OSError, ValueError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp_path)


@contextlib.contextmanager
def atomic_write(dest: str | os.PathLike[str], overwrite: bool = False,
                 buffer_size: int = DEFAULT_BUFFER_SIZE) -> Iterator[BinaryIO]:
    """Yield a binary file whose contents replace ``dest`` only if the block completes.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``dest``
    keeps its old state. Raises :class:`OutputExistsError` before anything is written when
    ``dest`` exists and ``overwrite`` is false.
    """
    output = AtomicFile(dest, overwrite=overwrite, buffer_size=buffer_size)
    try:
        yield output.file
    except BaseException:
        output.discard()
        raise
    output.commit()


def stage_folder(dest: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """A new, empty folder beside ``dest`` to build an output folder in, with the mode a plain
    ``mkdir`` would give (not ``mkdtemp``'s 0700). Refuses an existing ``dest`` unless
    ``overwrite``, and a missing parent folder."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it", where=str(dest))
    if not dest.parent.is_dir():
        raise AssetkitError("output folder does not exist", where=str(dest.parent))
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    return staging


def place_folder(staging: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Rename the complete ``staging`` folder to ``dest``. An existing ``dest`` is first moved
    aside (one rename), then removed, so that ``dest`` always names a whole folder."""
    staging, dest = Path(staging), Path(dest)
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
        os.replace(dest, old / "x")
        os.replace(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, dest)
    _fsync_folder(dest.parent)
