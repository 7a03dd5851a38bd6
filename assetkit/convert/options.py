"""One frozen object for what a conversion is asked to do, threaded from the CLI (or the API)
through batches to :func:`~assetkit.convert.to_safetensors.convert_file`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class ConvertOptions:
    """What to convert and how. ``dtype``: ``fp16``/``bf16``/``fp32`` (or a safetensors id);
    ``state_dict_key``/``only``/``strip_prefix`` select and rename tensors; ``keep_metadata``
    carries the source's plain values; ``metadata`` adds header entries; ``salvage`` keeps the
    tensors of an unsafe pickle; ``verify`` re-reads the output; ``overwrite`` replaces it."""

    dtype: str | None = None
    only: str | None = None
    strip_prefix: str | None = None
    state_dict_key: str | None = None
    keep_metadata: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    salvage: bool = False
    verify: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata or {})))

    @property
    def transforms(self) -> bool:
        """Whether the tensors change (a ``.safetensors`` source is worth rewriting)."""
        return bool(self.dtype or self.only or self.strip_prefix or self.state_dict_key)

    @classmethod
    def from_kwargs(cls, **settings: Any) -> ConvertOptions:
        """The options from ``convert_file``-style keyword arguments (unknown names are a TypeError)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"unknown conversion option(s): {', '.join(unknown)}")
        return cls(**settings)
