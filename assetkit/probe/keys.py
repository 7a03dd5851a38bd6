"""A read-only view of tensor names and shapes, optionally under a name prefix.

Probers ask questions of a :class:`KeyView` ("is this key there, what shape, how many blocks")
and never touch tensor data. A view of ``model.diffusion_model.`` inside a full checkpoint sees
``input_blocks.0.0.weight``; :meth:`KeyView.full` gives the name back for evidence strings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from ..formats.base import TensorInfo, count_bytes, count_dtypes, count_parameters


class KeyView:
    """Tensor infos keyed by name relative to ``prefix``."""

    __slots__ = ("prefix", "infos", "_suffix_cache")

    def __init__(self, infos: Mapping[str, TensorInfo], prefix: str = "") -> None:
        self.prefix = prefix
        self.infos: dict[str, TensorInfo] = dict(infos)
        self._suffix_cache: dict[str, str | None] = {}

    @classmethod
    def of(cls, tensors: Mapping[str, TensorInfo]) -> KeyView:
        return cls(tensors)

    def sub(self, prefix: str) -> KeyView:
        """The tensors whose relative name starts with ``prefix``, with it stripped."""
        if not prefix:
            return self
        cut = len(prefix)
        return KeyView(
            {name[cut:]: info for name, info in self.infos.items() if name.startswith(prefix)},
            self.prefix + prefix,
        )

    # ---- questions ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.infos)

    def __contains__(self, key: str) -> bool:
        return key in self.infos

    def names(self) -> Iterable[str]:
        return self.infos.keys()

    def shape(self, key: str | None) -> tuple[int, ...] | None:
        if key is None:
            return None
        info = self.infos.get(key)
        return info.shape if info is not None else None

    def dim(self, key: str | None, axis: int) -> int | None:
        """``shape(key)[axis]`` or None when the key is absent or has fewer dims."""
        shape = self.shape(key)
        if shape is None or len(shape) <= abs(axis) - (1 if axis < 0 else 0):
            return None
        try:
            return shape[axis]
        except IndexError:
            return None

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [key for key in keys if key not in self.infos]

    def first_with_suffix(self, suffix: str) -> str | None:
        """The first key (in file order) that ends with ``suffix``."""
        if suffix not in self._suffix_cache:
            self._suffix_cache[suffix] = next((k for k in self.infos if k.endswith(suffix)), None)
        return self._suffix_cache[suffix]

    def with_prefix(self, prefix: str) -> int:
        return sum(1 for name in self.infos if name.startswith(prefix))

    def has_prefix(self, prefix: str) -> bool:
        return any(name.startswith(prefix) for name in self.infos)

    def indices(self, pattern: str) -> set[int]:
        """Distinct integers at the ``*`` of ``pattern`` (``joint_blocks.*.``) among the keys."""
        head, _, tail = pattern.partition("*")
        found: set[int] = set()
        cut = len(head)
        for name in self.infos:
            if not name.startswith(head):
                continue
            segment, sep, rest = name[cut:].partition(".")
            if segment.isdigit() and (not tail.strip(".") or rest.startswith(tail.lstrip("."))):
                found.add(int(segment))
        return found

    def count(self, pattern: str) -> int:
        return len(self.indices(pattern))

    def claimed(self, prefixes: Iterable[str]) -> int:
        """How many tensors start with one of ``prefixes`` (a verdict's coverage)."""
        heads = tuple(prefixes)
        return sum(1 for name in self.infos if name.startswith(heads)) if heads else 0

    def coverage(self, prefixes: Iterable[str]) -> float:
        return self.claimed(prefixes) / len(self.infos) if self.infos else 0.0

    # ---- summaries ------------------------------------------------------------------------
    def full(self, key: str) -> str:
        """The name as stored in the file (prefix put back)."""
        return self.prefix + key

    def describe(self, key: str) -> str:
        """``full.name [d0, d1]`` for evidence strings."""
        shape = self.shape(key)
        dims = "?" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"
        return f"{self.full(key)} {dims}"

    @property
    def parameters(self) -> int:
        return count_parameters(self.infos.values())

    @property
    def nbytes(self) -> int:
        return count_bytes(self.infos.values())

    def dtype_counts(self) -> dict[str, int]:
        return count_dtypes(self.infos.values())

    def top_prefixes(self, limit: int = 8) -> list[str]:
        """The most common first name segments, for "what is this?" evidence."""
        counts = Counter(name.split(".", 1)[0] for name in self.infos)
        return [f"{head} ({n})" for head, n in counts.most_common(limit)]


def match_group(name: str, pattern: str) -> str | None:
    """The concrete prefix of ``name`` matching ``pattern`` (``*`` = one dot-free segment), or None."""
    if "*" not in pattern:
        return pattern if name.startswith(pattern) else None
    head, _, tail = pattern.partition("*")
    if not name.startswith(head):
        return None
    segment, sep, _ = name[len(head):].partition(".")
    if not segment or not sep:
        return None
    concrete = f"{head}{segment}."
    rest = tail[1:] if tail.startswith(".") else tail
    return concrete + rest if name.startswith(concrete + rest) else None


def fmt_shape(shape: tuple[int, ...] | None) -> str:
    return "?" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"
