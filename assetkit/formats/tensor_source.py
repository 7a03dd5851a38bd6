"""Bounded-memory reads of tensor bytes from their files, for every writer that streams tensors.

:class:`TensorSource` reads contiguous little-endian tensors with ``pread`` into one reused
buffer (no memory map, so touched pages never pile up in RSS), and everything else (strided
views, big-endian records, the verification read) through :func:`read_tensor_bytes` over memory
maps whose pages are dropped as soon as a chunk has been used. Used by the pickle -> safetensors
conversion (:mod:`assetkit.convert.to_safetensors`), by the layout conversion's target writer
(:mod:`assetkit.convert.targets`) and by the registry.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import FormatError
from .base import TensorInfo, read_tensor_bytes
from .dtypes import DTYPES

__all__ = ["CHUNK_BYTES", "TensorSource", "read_exactly", "source_start"]

#: Bytes moved per read step.
CHUNK_BYTES = 16 * 1024 * 1024


def source_start(info: TensorInfo) -> int:
    """Absolute offset of the view's first byte in its file (for ordering reads)."""
    if info.data_offset is None:
        return -1
    return info.data_offset + (info.storage_offset * DTYPES[info.dtype].bits) // 8


def read_exactly(fd: int, view: memoryview, offset: int, where: str) -> None:
    """Fill ``view`` from ``fd`` at ``offset`` (pread; loops over short reads)."""
    done = 0
    total = len(view)
    while done < total:
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [view[done:]], offset + done)
        else:  # pragma: no cover - platforms without preadv (Windows)
            os.lseek(fd, offset + done, os.SEEK_SET)
            got = os.readv(fd, [view[done:]])
        if got <= 0:
            raise FormatError("file ends inside tensor data (truncated?)", where=where)
        done += got


class TensorSource:
    """Bounded-memory access to the tensor bytes of one asset.

    The copy reads contiguous little-endian tensors with ``pread`` into a reused buffer;
    everything else (strided views, big-endian records) and the verification read go through
    :func:`read_tensor_bytes` over memory maps whose pages are dropped (``MADV_DONTNEED``) as
    soon as a chunk has been used, so they never accumulate in RSS.
    """

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes
        self._fds: dict[Path, int] = {}
        self._sizes: dict[Path, int] = {}
        self._maps: dict[Path, mmap.mmap] = {}
        self._buffer: bytearray | None = None

    # -- plumbing ------------------------------------------------------------------------------
    def fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            fd = os.open(file, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._fds[file] = fd
            self._sizes[file] = os.fstat(fd).st_size
        return fd

    def map(self, file: Path) -> mmap.mmap:
        mapped = self._maps.get(file)
        if mapped is None:
            mapped = mmap.mmap(self.fd(file), 0, access=mmap.ACCESS_READ)
            self._maps[file] = mapped
        return mapped

    def drop_pages(self, file: Path, start: int, end: int) -> None:
        """Unmap the pages of ``[start, end)`` from this process (they stay in the page cache)."""
        mapped = self._maps.get(file)
        if mapped is None or not hasattr(mmap, "MADV_DONTNEED") or end <= start:
            return
        page = mmap.PAGESIZE
        first = (start // page) * page
        last = min(len(mapped), -(-end // page) * page)
        if last > first:
            with contextlib.suppress(OSError, ValueError):  # advice only: never fail a conversion over it
                mapped.madvise(mmap.MADV_DONTNEED, first, last - first)

    def buffer(self) -> memoryview:
        if self._buffer is None:
            self._buffer = bytearray(self.chunk_bytes)
        return memoryview(self._buffer)

    def close(self) -> None:
        for mapped in self._maps.values():
            with contextlib.suppress(BufferError):
                mapped.close()
        self._maps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def is_direct(info: TensorInfo) -> bool:
        """True when the tensor is one run of little-endian bytes in its file (copied by pread)."""
        row = DTYPES[info.dtype]
        return info.data_offset is not None and info.is_contiguous and (
            info.byteorder == "little" or row.itemsize == 1 or row.bits < 8)

    def _direct_range(self, info: TensorInfo) -> tuple[int, int]:
        start = source_start(info)
        end = start + info.nbytes
        assert info.data_offset is not None
        storage_end = info.data_offset + info.storage_nbytes if info.storage_nbytes is not None else None
        if end > self._sizes[info.file] or (storage_end is not None and end > storage_end):
            raise FormatError("tensor data runs past the end of its storage", where=info.name)
        return start, end

    def _step(self, info: TensorInfo) -> int:
        item = DTYPES[info.dtype].itemsize
        return max(item, (self.chunk_bytes // item) * item)

    def copy_chunks(self, info: TensorInfo) -> Iterator[memoryview]:
        """The tensor's C-ordered little-endian bytes, element-aligned chunks of a reused buffer.

        Each chunk is valid until the next one is requested.
        """
        if info.numel == 0:
            return
        if self.is_direct(info):
            fd = self.fd(info.file)
            start, end = self._direct_range(info)
            buffer = self.buffer()
            step = self._step(info)
            for offset in range(start, end, step):
                size = min(step, end - offset)
                view = buffer[:size]
                read_exactly(fd, view, offset, info.name)
                yield view
            return
        yield from self.mapped_chunks(info)

    def mapped_chunks(self, info: TensorInfo) -> Iterator[memoryview]:
        """The same bytes as :meth:`copy_chunks`, read through :func:`read_tensor_bytes` (mmap)."""
        if info.numel == 0:
            return
        self.fd(info.file)
        data = memoryview(read_tensor_bytes(info, self.map)).cast("B")
        step = self._step(info)
        direct = self.is_direct(info)
        origin = source_start(info)
        try:
            for offset in range(0, len(data), step):
                yield data[offset: offset + step]
                if direct:
                    self.drop_pages(info.file, origin + offset, origin + min(len(data), offset + step))
        finally:
            data.release()
            assert info.data_offset is not None
            storage_end = info.data_offset + (info.storage_nbytes or 0)
            if not direct:
                self.drop_pages(info.file, info.data_offset, max(storage_end, origin + info.nbytes))
