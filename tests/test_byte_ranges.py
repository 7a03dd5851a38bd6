"""File-to-file range copies into safetensors outputs: same bytes as the buffered writer, on the
kernel path and the forced read/write fallback; an interrupted copy leaves nothing behind."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from assetkit.formats.ranges import FileRange, OutputHasher, RangeCopier, merge_ranges, write_pieces
from assetkit.formats.safetensors import read_safetensors
from assetkit.formats.safetensors_writer import SafetensorsWriter, TensorSpec


def _source(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"t{i:02d}": rng.standard_normal((i + 1, 7)).astype(np.float16) for i in range(12)}
    path = tmp_path / "src.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def _ranges(path):
    asset = read_safetensors(path)
    try:
        infos = [asset.tensors[n] for n in sorted(asset.tensors, key=lambda n: asset.tensors[n].data_offset)]
        return [(i.name, i.dtype, i.shape, FileRange(str(path), i.data_offset, i.nbytes)) for i in infos]
    finally:
        asset.close()


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_copied_output_is_byte_identical_to_buffered_writer(tmp_path, kernel_copy):
    path, tensors = _source(tmp_path)
    items = _ranges(path)
    specs = [TensorSpec(n, d, s) for n, d, s, _ in items]
    raw = path.read_bytes()
    with SafetensorsWriter(tmp_path / "old.safetensors", specs) as writer:
        for *_, r in items:
            writer.write(raw[r.offset:r.end])
    with SafetensorsWriter(tmp_path / "new.safetensors", specs) as writer:
        hasher = OutputHasher(writer.temp_path)
        # one tensor goes through the buffer between copies: ordering must hold
        pieces = [r for *_, r in items[:5]] + [[raw[items[5][3].offset:items[5][3].end]]] + [r for *_, r in items[6:]]
        copier = write_pieces(writer, pieces, hasher, kernel_copy=kernel_copy)
        digest = hasher.hexdigest()
    new = (tmp_path / "new.safetensors").read_bytes()
    assert new == (tmp_path / "old.safetensors").read_bytes()
    header = 8 + int.from_bytes(new[:8], "little")
    assert digest == hashlib.sha256(new[header:]).hexdigest()
    assert copier.copies == 2  # adjacent ranges merged: one copy before and one after the buffered tensor
    assert copier.kernel_copies == (2 if kernel_copy else 0)
    loaded = load_file(str(tmp_path / "new.safetensors"))
    assert all(np.array_equal(loaded[k], v) for k, v in tensors.items())


def test_merge_ranges_joins_only_continuations():
    a, b = FileRange("x", 0, 4), FileRange("x", 4, 4)
    assert merge_ranges([a, b, FileRange("y", 8, 2), FileRange("x", 8, 1)]) == [
        FileRange("x", 0, 8), FileRange("y", 8, 2), FileRange("x", 8, 1)]


def test_range_past_end_of_source_leaves_no_output(tmp_path):
    path, _ = _source(tmp_path)
    items = _ranges(path)
    specs = [TensorSpec(n, d, s) for n, d, s, _ in items]
    dest = tmp_path / "out.safetensors"
    last = items[-1][3]
    pieces = [r for *_, r in items[:-1]] + [FileRange(last.path, last.offset + 8, last.length)]
    with pytest.raises(Exception, match="past the end"), SafetensorsWriter(dest, specs) as writer:
        write_pieces(writer, pieces)
    assert list(tmp_path.iterdir()) == [path]


def test_interrupted_copy_leaves_no_partial_output(tmp_path):
    path, _ = _source(tmp_path)
    items = _ranges(path)
    specs = [TensorSpec(n, d, s) for n, d, s, _ in items]
    dest = tmp_path / "out.safetensors"

    def interrupted():
        yield from (r for *_, r in items[:3])
        yield iter(_raise_interrupt())

    with pytest.raises(KeyboardInterrupt), SafetensorsWriter(dest, specs) as writer:
        write_pieces(writer, interrupted())
    assert list(tmp_path.iterdir()) == [path]


def _raise_interrupt():
    raise KeyboardInterrupt
    yield b""  # pragma: no cover


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_copier_reports_every_chunk_so_the_hash_follows_the_copy(tmp_path, kernel_copy):
    """A long merged range is copied in chunks; each chunk is reported as it lands (the hasher
    starts before the range ends), the reports tile the range, and the digest is the data's."""
    path, _ = _source(tmp_path)
    raw = path.read_bytes()
    out = tmp_path / "out.bin"
    out.write_bytes(b"\0" * 100)
    fd = os.open(out, os.O_RDWR)
    hasher = OutputHasher(out)
    seen: list[tuple[int, int]] = []

    def report(offset: int, length: int) -> None:
        seen.append((offset, length))
        hasher.feed_written(offset, length)

    try:
        copier = RangeCopier(fd, kernel_copy=kernel_copy, chunk_bytes=64, on_copied=report)
        copier.copy(FileRange(str(path), 8, len(raw) - 8), 100)
        copier.close()
        digest = hasher.hexdigest()
    finally:
        os.close(fd)
        hasher.close()
    assert len(seen) == -(-(len(raw) - 8) // 64) > 2
    assert [o for o, _ in seen] == [100 + sum(n for _, n in seen[:i]) for i in range(len(seen))]
    assert sum(n for _, n in seen) == len(raw) - 8
    assert out.read_bytes()[100:] == raw[8:]
    assert digest == hashlib.sha256(raw[8:]).hexdigest()
