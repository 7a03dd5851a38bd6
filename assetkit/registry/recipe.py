"""Recipes: how the user's registry rebuilds an added safetensors file byte for byte.

A file whose tensors went into canonical component blobs is kept as a recipe (JSON)::

    {"version": 1, "size": N, "sha256": "...", "header": "<sha256 of the header blob>",
     "segments": [{"blob": sha, "offset": o, "length": n, "transform": null,
                   "component": "vae", "tensor": "decoder.conv_in.weight"}, ...]}

The header blob holds the file's first ``8 + header length`` bytes verbatim (its metadata, its
key order, its padding). The segments, in file order, give every following byte: a byte range
of a blob, copied as is (``transform`` null) or the 2-D transpose of a range (``"transpose"``,
with the target ``shape`` and ``itemsize``). Tensors with no place in any component live in an
``extras`` canonical blob like any other. Rebuild = header, then the segments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .blobs import CHUNK, BlobError, LocalBlobStore

RECIPE_VERSION = 1


@dataclass(frozen=True)
class Placement:
    """Where one source byte range lives: ``length`` bytes at ``offset`` of ``blob``."""

    blob: str
    offset: int
    length: int
    component: str = ""
    tensor: str = ""
    transform: str | None = None
    shape: tuple[int, ...] = ()
    itemsize: int = 0


def make_recipe(*, size: int, sha256: str, header_blob: str, header_len: int,
                placements: list[tuple[int, Placement]]) -> dict[str, Any]:
    """A recipe from the placements of every data byte: ``(file offset, placement)`` pairs.

    Raises :class:`ValueError` when the placements do not tile ``[header_len, size)`` exactly.
    Adjacent copies from consecutive ranges of one blob are merged into one segment.
    """
    segments: list[dict[str, Any]] = []
    position = header_len
    for offset, place in sorted(placements, key=lambda p: p[0]):
        if offset != position:
            raise ValueError(f"recipe does not tile the file: byte {position} is followed by a placement at {offset}")
        position += place.length
        if place.length == 0:
            continue
        last = segments[-1] if segments else None
        if (last is not None and place.transform is None and last["transform"] is None
                and last["blob"] == place.blob and last["offset"] + last["length"] == place.offset):
            last["length"] += place.length
            last["tensor"] = ""  # merged: several tensors
            continue
        segment: dict[str, Any] = {"blob": place.blob, "offset": place.offset, "length": place.length,
                                   "transform": place.transform, "component": place.component,
                                   "tensor": place.tensor}
        if place.transform == "transpose":
            segment["shape"] = list(place.shape)
            segment["itemsize"] = place.itemsize
        segments.append(segment)
    if position != size:
        raise ValueError(f"recipe covers {position} of {size} bytes")
    return {"version": RECIPE_VERSION, "size": size, "sha256": sha256, "header": header_blob,
            "segments": segments}


def recipe_blobs(recipe: dict[str, Any]) -> list[str]:
    """Every blob a recipe reads (header first), without repeats."""
    seen: dict[str, None] = {}
    if recipe.get("header"):
        seen[recipe["header"]] = None
    for segment in recipe.get("segments", ()):
        seen[segment["blob"]] = None
    return list(seen)


def _read_range(fh: Any, offset: int, length: int) -> Iterator[bytes]:
    fh.seek(offset)
    left = length
    while left:
        block = fh.read(min(CHUNK, left))
        if not block:
            raise BlobError("blob ends before the recipe's range")
        left -= len(block)
        yield block


def rebuild_chunks(store: LocalBlobStore, recipe: dict[str, Any]) -> Iterator[bytes]:
    """The bytes of the file a recipe describes, in order."""
    if recipe.get("version") != RECIPE_VERSION:
        raise BlobError(f"unknown recipe version {recipe.get('version')!r}")
    with store.open(recipe["header"]) as fh:
        yield fh.read()
    handles: dict[str, Any] = {}
    try:
        for segment in recipe["segments"]:
            fh = handles.get(segment["blob"])
            if fh is None:
                fh = handles[segment["blob"]] = store.open(segment["blob"])
            if segment["transform"] is None:
                yield from _read_range(fh, segment["offset"], segment["length"])
            elif segment["transform"] == "transpose":
                import numpy as np

                raw = b"".join(_read_range(fh, segment["offset"], segment["length"]))
                rows, cols = segment["shape"]
                matrix = np.frombuffer(raw, dtype=np.dtype((np.void, segment["itemsize"]))).reshape(rows, cols)
                yield np.ascontiguousarray(matrix.T).tobytes()
            else:
                raise BlobError(f"unknown recipe transform {segment['transform']!r}")
    finally:
        for fh in handles.values():
            fh.close()


def rebuild_sha256(store: LocalBlobStore, recipe: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for chunk in rebuild_chunks(store, recipe):
        digest.update(chunk)
    return digest.hexdigest()
