"""Byte ranges of source files copied straight into an output file, hashed in the same pass.

A layout conversion moves tensor bytes unchanged: every output tensor is one or more byte ranges
of a source file. :func:`merge_ranges` joins ranges that continue each other (same file, next
byte, next in the output), so a whole run of tensors becomes one copy. :class:`RangeCopier` copies
a range kernel side (``os.copy_file_range``: no trip through this process's memory), falling back
to ``pread``/``pwrite`` of a reused buffer where the kernel or file system cannot, and asks the
kernel to start writing each copied range to disk at once (``sync_file_range``, Linux), so the
fsync before the output's rename has little left to wait for. :class:`OutputHasher` computes the
sha256 of what was written, in a second thread that follows the copy chunk by chunk (64 MiB
behind it at most), by reading the output's own fresh pages back from the page cache (no second
read of the source from disk).

The output stays an :class:`~assetkit.formats.atomic.AtomicFile` (via the safetensors writer):
nothing appears at the destination before every byte is copied and fsynced.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import AssetkitError, FormatError

if TYPE_CHECKING:
    from .safetensors_writer import SafetensorsWriter

__all__ = ["COPY_BYTES", "FileRange", "OutputHasher", "RangeCopier", "merge_ranges", "write_pieces"]

#: Bytes per copy call and per fallback read (also the write-behind step).
COPY_BYTES = 64 * 1024 * 1024
#: The hasher's read-back buffer.
HASH_BYTES = 8 * 1024 * 1024
#: errno values that mean "no kernel copy here" (old kernel, other file system, special file).
_NO_KERNEL_COPY = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF,
                   errno.ETXTBSY, errno.EPERM}


@dataclass(frozen=True)
class FileRange:
    """``length`` bytes of ``path`` from absolute offset ``offset``."""

    path: str
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def merge_ranges(ranges: Iterable[FileRange]) -> list[FileRange]:
    """Join each range with the next when it starts where the previous ended in the same file."""
    merged: list[FileRange] = []
    for rng in ranges:
        if rng.length <= 0:
            continue
        last = merged[-1] if merged else None
        if last is not None and last.path == rng.path and last.end == rng.offset:
            merged[-1] = FileRange(last.path, last.offset, last.length + rng.length)
        else:
            merged.append(rng)
    return merged


def _load_sync_file_range() -> Any:
    """libc's ``sync_file_range`` (Linux), or None; Python's ``os`` module does not offer it."""
    if not hasattr(os, "copy_file_range"):  # not Linux: no write-behind either
        return None
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError, ImportError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_SYNC_FILE_RANGE_WRITE = 2


class RangeCopier:
    """Copy source byte ranges to given offsets of one output file descriptor.

    ``kernel_copy=False`` forces the ``pread``/``pwrite`` path (also taken by itself, for the rest
    of the run, the first time the kernel refuses ``copy_file_range``). ``write_behind`` starts
    the disk write of every copied range at once (advice only; ignored where unavailable).
    """

    def __init__(self, out_fd: int, *, kernel_copy: bool = True, write_behind: bool = True,
                 chunk_bytes: int = COPY_BYTES, on_copied: Callable[[int, int], None] | None = None) -> None:
        self.out_fd = out_fd
        #: Called with (output offset, length) after every chunk lands (the hasher follows the copy).
        self.on_copied = on_copied
        self.kernel_copy = kernel_copy and hasattr(os, "copy_file_range")
        self.chunk_bytes = chunk_bytes
        self._sync_range = _load_sync_file_range() if write_behind else None
        self._fds: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._buffer: bytearray | None = None
        #: Copies done, and how many of them went through the kernel (for tests and the bench).
        self.copies = 0
        self.kernel_copies = 0

    def _source(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
            except OSError as exc:
                raise AssetkitError(f"cannot read: {exc.strerror or exc}", where=path) from None
            self._fds[path] = fd
            self._sizes[path] = os.fstat(fd).st_size
        return fd

    def copy(self, rng: FileRange, dst_offset: int) -> None:
        """Copy ``rng`` to ``dst_offset`` of the output; the source must hold every byte of it."""
        src = self._source(rng.path)
        if rng.offset < 0 or rng.end > self._sizes[rng.path]:
            raise FormatError(f"tensor data runs past the end of the file ({rng.end:,} > "
                              f"{self._sizes[rng.path]:,} bytes)", where=rng.path)
        self.copies += 1
        kernel_before = self.kernel_copy
        done = 0
        while done < rng.length:
            step = min(self.chunk_bytes, rng.length - done)
            moved = self._copy_step(src, rng.offset + done, dst_offset + done, step, rng.path)
            if self._sync_range is not None:
                self._sync_range(self.out_fd, dst_offset + done, moved, _SYNC_FILE_RANGE_WRITE)
            if self.on_copied is not None:
                self.on_copied(dst_offset + done, moved)
            done += moved
        if kernel_before and self.kernel_copy:
            self.kernel_copies += 1

    def _copy_step(self, src: int, src_offset: int, dst_offset: int, size: int, where: str) -> int:
        if self.kernel_copy:
            try:
                moved = os.copy_file_range(src, self.out_fd, size, src_offset, dst_offset)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise AssetkitError(f"cannot copy: {exc.strerror or exc}", where=where) from None
                self.kernel_copy = False
            else:
                if moved <= 0:
                    raise FormatError("file ended early (changed while being read?)", where=where)
                return moved
        if self._buffer is None:
            self._buffer = bytearray(min(self.chunk_bytes, COPY_BYTES))
        view = memoryview(self._buffer)[:min(size, len(self._buffer))]
        got = os.preadv(src, [view], src_offset)
        if got <= 0:
            raise FormatError("file ended early (changed while being read?)", where=where)
        written = 0
        while written < got:
            written += os.pwrite(self.out_fd, view[written:got], dst_offset + written)
        return got

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._buffer = None


class OutputHasher:
    """sha256 of an output's data, fed in order with in-memory chunks (:meth:`feed`) or with byte
    ranges already written to the file (:meth:`feed_written`, read back from the page cache).
    Runs in a second thread (reads and hashlib release the GIL), chunk by chunk right behind the
    copy; at most ``depth`` in-memory chunks wait, so memory stays bounded (written ranges hold no
    memory and never make the writer wait)."""

    def __init__(self, path: str | os.PathLike[str], depth: int = 4) -> None:
        import hashlib
        import queue

        self.digest = hashlib.sha256()
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
        self._queue: Any = queue.SimpleQueue()
        self._in_memory = threading.BoundedSemaphore(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sha256-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = memoryview(bytearray(HASH_BYTES))
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                if isinstance(item, bytes):
                    self._in_memory.release()
                continue
            try:
                if isinstance(item, bytes):
                    try:
                        self.digest.update(item)
                    finally:
                        self._in_memory.release()
                    continue
                offset, length = item
                while length > 0:
                    got = os.preadv(self._fd, [buffer[:min(length, HASH_BYTES)]], offset)
                    if got <= 0:
                        raise OSError(errno.EIO, "output shorter than written")
                    self.digest.update(buffer[:got])
                    offset += got
                    length -= got
            except BaseException as exc:  # reported by hexdigest(), in the caller's thread
                self._error = exc

    def feed(self, chunk: Any) -> None:
        """Hash ``chunk`` (copied: the caller may reuse its buffer)."""
        data = bytes(chunk)
        self._in_memory.acquire()
        self._queue.put(data)

    def feed_written(self, offset: int, length: int) -> None:
        """Hash ``length`` bytes of the output from ``offset`` (already written, flushed or copied)."""
        if length > 0:
            self._queue.put((offset, length))

    def hexdigest(self) -> str:
        """Wait for every queued piece; the sha256 of all of them."""
        self.close()
        if self._error is not None:
            raise AssetkitError(f"cannot read the output back to hash it: {self._error}")
        return self.digest.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_pieces(writer: SafetensorsWriter, pieces: Iterable[FileRange | Iterable[Any]],
                 hasher: OutputHasher | None = None, *, kernel_copy: bool = True) -> RangeCopier:
    """Append ``pieces`` in order to an open safetensors ``writer``: a :class:`FileRange` is copied
    file to file (runs of adjacent ranges merged into one copy), anything else is an iterable of
    bytes-like chunks written through the writer's buffer. ``hasher`` sees every byte in output
    order. Returns the (closed) copier, whose counters tell how the bytes went."""
    copier = RangeCopier(writer.output_fd(), kernel_copy=kernel_copy,
                         on_copied=hasher.feed_written if hasher is not None else None)
    run: list[FileRange] = []

    def copy_run() -> None:
        for rng in merge_ranges(run):
            writer.copy_range(rng, copier)
        run.clear()

    try:
        for piece in pieces:
            if isinstance(piece, FileRange):
                run.append(piece)
                continue
            copy_run()
            for chunk in piece:
                if hasher is not None:
                    hasher.feed(chunk)
                writer.write(chunk)
        copy_run()
    finally:
        copier.close()
    return copier
