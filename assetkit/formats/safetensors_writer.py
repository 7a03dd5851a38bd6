"""The streaming safetensors writer: the header is planned from the tensor specs before a byte
of data moves, then the data is written tensor by tensor (or copied file to file, byte ranges of
other files) into an atomic temporary file, checked complete, fsynced and renamed into place.

It writes only what the strict reader (:mod:`assetkit.formats.safetensors`) accepts: the same
name and string rules, the same header cap.
"""

from __future__ import annotations

import json
import operator
import os
import struct
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AssetkitError
from .atomic import AtomicFile, check_destination
from .dtypes import DTYPES
from .safetensors import METADATA_KEY, name_problem, quote_name, string_problem
from .sniff import HEADER_CAP

if TYPE_CHECKING:
    from .ranges import FileRange, RangeCopier

__all__ = ["SafetensorsWriter", "SpecError", "TensorSpec", "plan_header"]


class SpecError(AssetkitError, ValueError):
    """The tensors or metadata handed to the writer cannot make a valid safetensors file."""


@dataclass(frozen=True)
class TensorSpec:
    """One tensor to write: its name, safetensors dtype id and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        """Store the shape as a tuple of ints (numpy ints and ``torch.Size`` are fine); anything
        else (bools, floats, negative numbers) is kept as given and refused by :func:`plan_header`."""
        try:
            dims = tuple(self.shape)
            if any(isinstance(dim, bool) for dim in dims):
                return
            object.__setattr__(self, "shape", tuple(operator.index(dim) for dim in dims))
        except TypeError:
            return

    @property
    def numel(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPES[self.dtype].bits // 8


def _validate_spec(spec: TensorSpec) -> int:
    """Check one spec; returns its byte size."""
    problem = name_problem(spec.name) if isinstance(spec.name, str) else "tensor name must be a string"
    if problem:
        raise SpecError(problem)
    if spec.name == METADATA_KEY:
        raise SpecError("a tensor cannot be named '__metadata__'")
    row = DTYPES.get(spec.dtype) if isinstance(spec.dtype, str) else None
    bits = row.bits if row is not None else None
    if bits is None:
        raise SpecError(f"tensor {quote_name(spec.name)}: unknown dtype {spec.dtype!r} (expected one of {', '.join(DTYPES)})")
    if not isinstance(spec.shape, tuple) or not all(type(dim) is int and dim >= 0 for dim in spec.shape):
        raise SpecError(f"tensor {quote_name(spec.name)}: shape {spec.shape!r} must be non-negative integers")
    nbits = spec.numel * bits
    if nbits % 8:
        raise SpecError(f"tensor {quote_name(spec.name)}: {spec.numel} elements of {spec.dtype} do not fill whole bytes")
    return nbits // 8


def _plan(specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None) -> tuple[bytes, list[int]]:
    header: dict[str, Any] = {}
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise SpecError(f"metadata must map strings to strings: {key!r} -> {type(value).__name__}")
            if string_problem(key) or string_problem(value):
                raise SpecError(f"metadata entry {key!r} is not valid Unicode")
        header[METADATA_KEY] = dict(metadata)
    sizes: list[int] = []
    offset = 0
    for spec in specs:
        size = _validate_spec(spec)
        if spec.name in header:
            raise SpecError(f"duplicate tensor name {quote_name(spec.name)}")
        header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [offset, offset + size]}
        offset += size
        sizes.append(size)
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # 8 + len(text) is a multiple of 8: tensor data starts aligned
    if len(text) > HEADER_CAP:
        raise SpecError(f"header would take {len(text):,} bytes, more than the format's cap of {HEADER_CAP:,}")
    return struct.pack("<Q", len(text)) + text, sizes


def plan_header(specs: Iterable[TensorSpec], metadata: Mapping[str, str] | None = None) -> bytes:
    """The length field and header for ``specs`` laid out in order, padded so data is 8-byte aligned.

    Raises :class:`SpecError` (an :class:`AssetkitError` and a ``ValueError``) for unknown dtypes,
    bad shapes, duplicate or empty names and non-string metadata.
    """
    return _plan(list(specs), metadata)[0]


class SafetensorsWriter:
    """Stream a safetensors file to ``dest``: header first, then tensor bytes in declared order.

    ::

        with SafetensorsWriter(dest, specs, metadata) as writer:
            for spec in specs:
                writer.write(data_of(spec))   # any chunking: several writes per tensor, or one for many

    The file is built in a temporary file beside ``dest`` and renamed into place by
    :meth:`commit` (called by a clean ``with`` exit) once every declared byte was written. An
    exception inside the block, or a missing byte, leaves nothing at ``dest``. An existing
    ``dest`` is refused in the constructor unless ``overwrite``.
    """

    def __init__(self, dest: str | os.PathLike[str], specs: Iterable[TensorSpec],
                 metadata: Mapping[str, str] | None = None, overwrite: bool = False) -> None:
        self.dest = Path(dest)
        self.specs: tuple[TensorSpec, ...] = tuple(specs)
        self.overwrite = overwrite
        self.header, sizes = _plan(self.specs, metadata)
        self._ends: list[int] = []
        total = 0
        for size in sizes:
            total += size
            self._ends.append(total)
        #: Tensor data bytes the file will hold.
        self.total_bytes = total
        #: Tensor data bytes written so far.
        self.bytes_written = 0
        check_destination(self.dest, overwrite)
        self._output: AtomicFile | None = None
        self._state = "new"

    # ---- life cycle ------------------------------------------------------------------------
    def open(self) -> SafetensorsWriter:
        """Create the temporary file and write the header (done by ``with``)."""
        if self._state != "new":
            raise AssetkitError(f"writer is already {self._state}", where=str(self.dest))
        self._output = AtomicFile(self.dest, overwrite=self.overwrite)
        self._state = "open"
        try:
            self._output.file.write(self.header)
        except OSError as exc:
            self.abort()
            raise AssetkitError(f"cannot write: {exc.strerror or exc}", where=str(self.dest)) from None
        return self

    def __enter__(self) -> SafetensorsWriter:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:
            self.abort()
            return
        if self._state == "open":
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise

    def commit(self) -> None:
        """Check that every tensor is complete, then fsync and rename the file into place."""
        if self._state != "open":
            raise AssetkitError(f"cannot commit: writer is {self._state}", where=str(self.dest))
        if self.bytes_written != self.total_bytes:
            index = bisect_right(self._ends, self.bytes_written)
            spec = self.specs[index]
            start = self._ends[index - 1] if index else 0
            raise AssetkitError(
                f"incomplete: tensor {quote_name(spec.name)} has {self.bytes_written - start:,} of its "
                f"{self._ends[index] - start:,} bytes ({self.total_bytes - self.bytes_written:,} bytes of tensor "
                f"data missing in all)", where=str(self.dest))
        assert self._output is not None
        try:
            self._output.commit()  # removes the temporary file itself when it fails
        except BaseException:
            self._state = "aborted"
            raise
        self._state = "committed"

    def abort(self) -> None:
        """Remove the temporary file; ``dest`` keeps its old state. Safe to call repeatedly."""
        if self._output is not None and self._state == "open":
            self._output.discard()
        if self._state in ("new", "open"):
            self._state = "aborted"

    # ---- before commit: re-reading and patching the temporary file ---------------------------
    def flush(self) -> None:
        """Push buffered bytes to the temporary file (so it can be re-read before commit)."""
        self._require_open("flush")
        assert self._output is not None
        try:
            self._output.file.flush()
        except OSError as exc:
            raise AssetkitError(f"cannot write: {exc.strerror or exc}", where=str(self.dest)) from None

    @property
    def temp_path(self) -> Path | None:
        """The temporary file being written (None unless open); flushed on access, so a verifier
        can re-read everything written so far before :meth:`commit` moves it to ``dest``."""
        if self._state != "open" or self._output is None:
            return None
        self.flush()
        return self._output.temp_path

    def replace_metadata(self, metadata: Mapping[str, str] | None) -> None:
        """Rewrite the header with new metadata, in place, before commit.

        The new header must fit in the space of the planned one (reserve room with a placeholder
        of the final length, e.g. a 64-character digest); shorter ones are padded with spaces,
        so the data offsets and alignment stay unchanged.
        """
        self._require_open("replace metadata")
        new_header, _ = _plan(self.specs, metadata)
        room = len(self.header) - 8
        text = new_header[8:].rstrip(b" ")
        if len(text) > room:
            raise SpecError(f"new metadata makes the header {len(text):,} bytes, more than the {room:,} bytes "
                            f"planned: reserve the room with placeholders of the final length")
        patched = self.header[:8] + text + b" " * (room - len(text))
        self.flush()
        assert self._output is not None
        try:
            os.pwrite(self._output.file.fileno(), patched, 0)
        except OSError as exc:
            raise AssetkitError(f"cannot write: {exc.strerror or exc}", where=str(self.dest)) from None
        self.header = patched

    def _require_open(self, action: str) -> None:
        if self._state != "open":
            raise AssetkitError(f"cannot {action}: writer is {self._state} (use it in a with block)",
                                where=str(self.dest))

    # ---- data ------------------------------------------------------------------------------
    @property
    def current_tensor(self) -> str | None:
        """Name of the tensor the next written byte belongs to (None when all are complete)."""
        index = bisect_right(self._ends, self.bytes_written)
        return self.specs[index].name if index < len(self.specs) else None

    def write(self, data: Any) -> int:
        """Append tensor bytes (any bytes-like object, C-contiguous); returns the byte count.

        Large buffers are passed to the OS without copying. Writing more bytes than declared
        raises :class:`AssetkitError` and writes nothing of ``data``.
        """
        self._require_open("write")
        view = data if isinstance(data, memoryview) else memoryview(data)
        if not view.c_contiguous:
            raise SpecError("tensor data must be a C-contiguous bytes-like object")
        size = view.nbytes
        if size == 0:
            return 0
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        if self.bytes_written + size > self.total_bytes:
            raise AssetkitError(
                f"too many bytes: writing {size:,} more would exceed the {self.total_bytes:,} bytes declared "
                f"for all tensors ({self.bytes_written:,} already written)", where=str(self.dest))
        assert self._output is not None
        try:
            self._output.file.write(view)
        except OSError as exc:
            raise AssetkitError(f"cannot write: {exc.strerror or exc}", where=str(self.dest)) from None
        self.bytes_written += size
        return size

    def copy_range(self, source: FileRange, copier: RangeCopier) -> tuple[int, int]:
        """Append ``source``'s bytes, copied file to file by ``copier`` (made for this writer's
        :meth:`output_fd`) without passing through this process. Returns the (file offset,
        length) the bytes took in the output. Counts, and refuses overflow, like :meth:`write`."""
        self._require_open("write")
        size = source.length
        if size <= 0:
            return len(self.header) + self.bytes_written, 0
        if self.bytes_written + size > self.total_bytes:
            raise AssetkitError(
                f"too many bytes: copying {size:,} more would exceed the {self.total_bytes:,} bytes declared "
                f"for all tensors ({self.bytes_written:,} already written)", where=str(self.dest))
        self.flush()  # buffered bytes go first: the copy lands after them
        fd = self.output_fd()
        start = len(self.header) + self.bytes_written
        try:
            copier.copy(source, start)
            os.lseek(fd, start + size, os.SEEK_SET)  # buffered writes continue after the copy
        except OSError as exc:
            raise AssetkitError(f"cannot write: {exc.strerror or exc}", where=str(self.dest)) from None
        self.bytes_written += size
        return start, size

    def output_fd(self) -> int:
        """The open temporary file's descriptor (for a :class:`RangeCopier`)."""
        self._require_open("copy into")
        assert self._output is not None
        return self._output.file.fileno()

    def write_tensor(self, name: str, data: Any) -> int:
        """Write one whole tensor, checking that it is the next one declared and has its exact size."""
        expected = self.current_tensor
        index = bisect_right(self._ends, self.bytes_written)
        start = self._ends[index - 1] if index else 0
        if expected != name or self.bytes_written != start:
            raise AssetkitError(f"tensor {quote_name(name)} written out of order: next is {quote_name(expected or '')}"
                                if expected is not None else f"tensor {quote_name(name)}: all tensors already written",
                                where=str(self.dest))
        view = data if isinstance(data, memoryview) else memoryview(data)
        need = self._ends[index] - start
        if view.nbytes != need:
            raise AssetkitError(f"tensor {quote_name(name)} needs {need:,} bytes, got {view.nbytes:,}",
                                where=str(self.dest))
        return self.write(view)
