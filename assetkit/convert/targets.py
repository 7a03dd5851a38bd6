"""The bytes of key-map targets, and safetensors files written from them.

A :class:`~assetkit.convert.keymap.TargetTensor` is a list of byte ranges of source tensors
(``parts``), possibly transposed. This module is the one place that turns a target into bytes:
:func:`target_chunks` (concatenation, transpose, dtype cast), :func:`target_ranges` (the same
bytes as file ranges, when they can be copied unchanged) and :func:`write_targets` (a whole
safetensors file, unchanged bytes copied file to file by :mod:`assetkit.formats.ranges`).
The layout conversion writes its folders and single files with it; the registry stores the
canonical components of a split single file with :func:`target_chunks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..formats import Asset
from ..formats.tensor_source import TensorSource, source_start
from .keymap import SourcePart, TargetTensor

__all__ = ["Locate", "ReadPart", "part_chunks", "part_in_memory", "target_chunks", "target_ranges", "write_targets"]

#: Where a part's source tensor lives: ``name -> (asset, tensor name in that asset)``.
Locate = Callable[[str], tuple[Asset, str]]
#: The bytes of one source part, as chunks.
ReadPart = Callable[[SourcePart], Iterable[memoryview]]


def part_chunks(part: SourcePart, locate: Locate, reader: TensorSource) -> Iterator[memoryview]:
    """The bytes of one source part, in chunks of ``reader``'s reused buffer (pread; bounded
    memory). Each chunk is valid until the next one is requested."""
    asset, key = locate(part.source)
    info = asset.tensors[key]
    if part.stop <= part.start:
        return
    if reader.is_direct(info):
        sub = dataclasses.replace(info, dtype="U8", shape=(part.stop - part.start,), storage_offset=0, stride=None,
                                  data_offset=source_start(info) + part.start, storage_nbytes=None)
        yield from reader.copy_chunks(sub)
    else:  # strided or big-endian: this one tensor is materialised
        yield memoryview(asset.tensor_bytes(key)).cast("B")[part.start:part.stop]


def part_in_memory(asset: Asset) -> ReadPart:
    """Parts of ``asset``'s tensors read as views of :meth:`Asset.tensor_bytes` (memory-mapped
    where the reader maps; chunks stay valid)."""
    def read(part: SourcePart) -> Iterable[memoryview]:
        return [memoryview(asset.tensor_bytes(part.source)).cast("B")[part.start:part.stop]]

    return read


def target_chunks(target: TargetTensor, read_part: ReadPart, dtype: str | None = None) -> Iterator[memoryview]:
    """The target tensor's bytes, chunk by chunk, cast to ``dtype`` when it is given and differs.

    A ``transpose`` target (one part, a 2-D matrix stored the other way round) is materialised.
    """
    from .dtype_cast import cast_bytes

    chunks: Iterable[memoryview]
    if target.transform == "transpose":
        import numpy as np

        from ..formats.dtypes import DTYPES

        (part,) = target.parts
        raw = b"".join(bytes(c) for c in read_part(part))
        item = DTYPES[target.dtype].itemsize
        rows, cols = target.shape
        matrix = np.frombuffer(raw, dtype=np.dtype((np.void, item))).reshape(cols, rows)
        chunks = [memoryview(np.ascontiguousarray(matrix.T).tobytes())]
    else:
        chunks = (c for p in target.parts for c in read_part(p))
    for chunk in chunks:
        yield chunk if dtype is None or dtype == target.dtype else cast_bytes(chunk, target.dtype, dtype)


def target_ranges(target: TargetTensor, locate: Locate, reader: TensorSource, dtype: str) -> list[Any] | None:
    """The target's bytes as file ranges of its sources, when they are copied unchanged (same
    dtype, no transpose, contiguous little-endian sources); None when they must be computed."""
    from ..formats.ranges import FileRange

    if dtype != target.dtype or target.transform:
        return None
    ranges = []
    for part in target.parts:
        asset, key = locate(part.source)
        info = asset.tensors[key]
        if info.file is None or not reader.is_direct(info):
            return None
        start = source_start(info) + part.start
        if info.storage_nbytes is not None and start + part.stop - part.start > info.data_offset + info.storage_nbytes:
            return None  # the chunked path reports it
        ranges.append(FileRange(str(info.file), start, part.stop - part.start))
    return ranges


def write_targets(dest: Path, targets: Iterable[TargetTensor], locate: Locate, dtype: str | None,
                  metadata: Mapping[str, str] | None = None, *, hash_key: str | None = None,
                  kernel_copy: bool = True, overwrite: bool = False) -> str | None:
    """Stream ``targets`` into a safetensors file at ``dest`` (atomic): unchanged bytes are copied
    file to file (:mod:`assetkit.formats.ranges`), cast or transposed ones computed in chunks.
    With ``hash_key``, the metadata entry of that name becomes ``0x`` + the sha256 of the tensor
    data, computed in the same pass and patched into the header before the file is committed.
    Returns that digest."""
    from ..formats.ranges import OutputHasher, write_pieces
    from ..formats.safetensors_writer import SafetensorsWriter, TensorSpec
    from .dtype_cast import output_dtype

    targets = list(targets)
    out_dtypes = [output_dtype(t.dtype, dtype) for t in targets]
    specs = [TensorSpec(t.name, d, t.shape) for t, d in zip(targets, out_dtypes, strict=True)]
    meta = dict(metadata or {})
    if hash_key:
        meta[hash_key] = "0x" + "0" * 64  # placeholder of the final length
    reader = TensorSource()

    def read_part(part: SourcePart) -> Iterator[memoryview]:
        return part_chunks(part, locate, reader)

    pieces: list[Any] = []
    for target, out in zip(targets, out_dtypes, strict=True):
        ranges = target_ranges(target, locate, reader, out)
        if ranges is None:
            pieces.append(target_chunks(target, read_part, out))
        else:
            pieces.extend(ranges)
    hasher: OutputHasher | None = None
    digest: str | None = None
    try:
        with SafetensorsWriter(dest, specs, meta or None, overwrite=overwrite) as writer:
            if hash_key:
                assert writer.temp_path is not None
                hasher = OutputHasher(writer.temp_path)
            write_pieces(writer, pieces, hasher, kernel_copy=kernel_copy)
            if hasher is not None and hash_key:
                digest = hasher.hexdigest()
                meta[hash_key] = "0x" + digest
                writer.replace_metadata(meta)
    finally:
        if hasher is not None:
            hasher.close()
        reader.close()
    return digest
