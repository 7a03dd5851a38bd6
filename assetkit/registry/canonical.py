"""The canonical form of a component's tensors: the unit of sharing in the user's registry.

A canonical blob is a plain safetensors file: the tensors in diffusers names (as the source or the
converter gives them), sorted by name, no ``__metadata__``, the header as
:func:`assetkit.formats.safetensors_writer.plan_header` writes it. Whatever container a VAE arrived in
(a standalone file, a diffusers ``vae/`` folder, a full checkpoint split by the converter), equal
tensors give byte-equal canonical blobs, hence one blob. It is also a file diffusers loads as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .blobs import LocalBlobStore


@dataclass(frozen=True)
class CanonicalTensor:
    """One tensor of a canonical blob and how to get its bytes (``chunks()`` yields them in order)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    chunks: Callable[[], Iterator[Any]]


@dataclass(frozen=True)
class CanonicalBlob:
    sha256: str
    size: int
    #: tensor name -> (absolute offset in the blob, length)
    offsets: dict[str, tuple[int, int]]
    dtypes: dict[str, str]
    shapes: dict[str, tuple[int, ...]]


def plan(tensors: Sequence[CanonicalTensor]) -> tuple[bytes, dict[str, tuple[int, int]], list[CanonicalTensor]]:
    """Header bytes, offsets and the write order of the canonical blob of ``tensors``."""
    from ..formats.safetensors_writer import TensorSpec, plan_header

    ordered = sorted(tensors, key=lambda t: t.name)
    header = plan_header([TensorSpec(t.name, t.dtype, t.shape) for t in ordered], None)
    offsets: dict[str, tuple[int, int]] = {}
    position = len(header)
    for tensor in ordered:
        offsets[tensor.name] = (position, tensor.nbytes)
        position += tensor.nbytes
    return header, offsets, ordered


def store_canonical(store: LocalBlobStore, tensors: Sequence[CanonicalTensor],
                    progress: Callable[[int], None] | None = None) -> CanonicalBlob:
    """Write (or find) the canonical blob of ``tensors``; streams, one tensor at a time."""
    header, offsets, ordered = plan(tensors)

    def chunks() -> Iterator[Any]:
        yield header
        for tensor in ordered:
            for chunk in tensor.chunks():
                if progress is not None:
                    progress(len(chunk))
                yield chunk

    sha256 = store.put_stream(chunks())
    size = len(header) + sum(t.nbytes for t in ordered)
    return CanonicalBlob(sha256, size, offsets, {t.name: t.dtype for t in ordered},
                         {t.name: tuple(t.shape) for t in ordered})


def asset_tensors(asset: Any, names: Sequence[str] | None = None, rename: Callable[[str], str] | None = None,
                  piece: int = 64 * 1024 * 1024) -> list[CanonicalTensor]:
    """:class:`CanonicalTensor` for tensors of an :class:`~assetkit.formats.Asset` (read in place,
    in pieces of ``piece`` bytes so a huge tensor never sits in memory twice)."""
    out = []
    for name in names if names is not None else list(asset.tensors):
        info = asset.tensors[name]

        def chunks(name: str = name) -> Iterator[Any]:
            data = asset.tensor_bytes(name)
            view = memoryview(data).cast("B") if len(data) else memoryview(b"")
            for start in range(0, len(view), piece):
                yield view[start:start + piece]

        out.append(CanonicalTensor(rename(name) if rename else name, info.dtype, tuple(info.shape), info.nbytes,
                                   chunks))
    return out
