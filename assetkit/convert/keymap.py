"""The key-map engine: declarative, reversible rules between the original (CompVis/SGM/open_clip)
and the diffusers/transformers tensor names of one component.

A component's rule module (:mod:`assetkit.convert.layouts`) turns a config into a list of
:class:`Rule` rows; the same rows serve both directions. Each row ties original names to diffusers
names with one operation:

* ``rename``: one tensor, same bytes, same shape;
* ``squeeze``: one tensor, same bytes, the original has trailing 1x1 dims (1x1 conv <-> linear);
* ``split``: one original tensor is N diffusers tensors along dim 0 (fused qkv): equal chunks, or
  the rows given by ``sizes`` (Flux single blocks' ``linear1``: q, k, v and the MLP input); the
  reverse is a concatenation;
* ``transpose``: one 2-D tensor stored transposed (open_clip ``text_projection``);
* ``swap``: one tensor whose two halves along dim 0 are stored in the other order (SD3/Flux
  ``adaLN_modulation``: shift, scale in the original, scale, shift in diffusers); its own inverse.

Targets are described as byte ranges of source tensors (:class:`TargetTensor`), so splits and
concatenations stream: nothing loads the model. :func:`check_rules` reports any name that maps to
two places; :func:`map_names` reports source names that map to nothing (extras) and expected
names the source lacks (missing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import AssetkitError
from ..formats.dtypes import nbytes_for

OPS = ("rename", "squeeze", "split", "transpose", "swap")
DIRECTIONS = ("to_diffusers", "to_original")


@dataclass(frozen=True)
class Rule:
    """Original names <-> diffusers names of one tensor (or one fused tensor and its parts)."""

    original: tuple[str, ...]
    diffusers: tuple[str, ...]
    op: str = "rename"
    sizes: tuple[int, ...] = ()  #: a split's dim-0 sizes, one per diffusers name (empty: equal chunks)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown key-map operation {self.op!r}")
        if self.sizes and (self.op != "split" or len(self.sizes) != len(self.diffusers)
                           or any(n <= 0 for n in self.sizes)):
            raise ValueError("sizes belong to a split rule: one positive size per diffusers name")
        if self.op == "split":
            if len(self.original) != 1 or len(self.diffusers) < 2:
                raise ValueError("a split rule has one original name and several diffusers names")
        elif len(self.original) != 1 or len(self.diffusers) != 1:
            raise ValueError(f"a {self.op} rule has one name on each side")

    def sources(self, direction: str) -> tuple[str, ...]:
        return self.original if direction == "to_diffusers" else self.diffusers

    def targets(self, direction: str) -> tuple[str, ...]:
        return self.diffusers if direction == "to_diffusers" else self.original

    def prefixed(self, original: str, diffusers: str) -> Rule:
        return Rule(tuple(original + n for n in self.original), tuple(diffusers + n for n in self.diffusers), self.op,
                    self.sizes)


def split(original: str, diffusers: Sequence[str], sizes: Sequence[int] = ()) -> Rule:
    """One fused original tensor <-> its diffusers parts along dim 0 (``sizes``: unequal parts)."""
    return Rule((original,), tuple(diffusers), "split", tuple(sizes))


def rename(original: str, diffusers: str | None = None) -> Rule:
    return Rule((original,), (diffusers if diffusers is not None else original,), "rename")


def params(original: str, diffusers: str | None = None, names: Sequence[str] = ("weight", "bias")) -> list[Rule]:
    """``rename`` rows for a module's parameters (``weight``/``bias`` by default)."""
    diffusers = original if diffusers is None else diffusers
    return [rename(f"{original}.{n}", f"{diffusers}.{n}") for n in names]


@dataclass(frozen=True)
class SourcePart:
    """``stop - start`` bytes of one source tensor's data, from byte ``start``."""

    source: str
    start: int
    stop: int


@dataclass(frozen=True)
class TargetTensor:
    """One tensor to write: its bytes are its parts concatenated (``transform`` None) or the 2-D
    transpose of its single part (``transform == "transpose"``)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    parts: tuple[SourcePart, ...]
    transform: str | None = None

    @property
    def nbytes(self) -> int:
        return sum(p.stop - p.start for p in self.parts)


@dataclass(frozen=True)
class Mapped:
    """What :func:`map_names` made of a set of source tensors."""

    targets: tuple[TargetTensor, ...]
    unmatched: tuple[str, ...]  #: source names no rule claims (extras)
    missing: tuple[str, ...]  #: names a rule expects that the source lacks


class KeyMapError(AssetkitError):
    """A rule set that maps a name to two places, or a source whose shapes do not fit the rules."""


def check_rules(rules: Iterable[Rule]) -> list[str]:
    """Names that appear in more than one place on either side (empty when the rules are sound)."""
    seen: dict[tuple[str, str], int] = {}
    for rule in rules:
        for side, names in (("original", rule.original), ("diffusers", rule.diffusers)):
            for n in names:
                seen[(side, n)] = seen.get((side, n), 0) + 1
    return sorted(f"{side} name {n} maps to {c} places" for (side, n), c in seen.items() if c > 1)


def _whole(name: str, nbytes: int) -> tuple[SourcePart, ...]:
    return (SourcePart(name, 0, nbytes),)


def map_names(rules: Sequence[Rule], source: Mapping[str, tuple[str, tuple[int, ...]]], direction: str,
              *, target_prefix: str = "") -> Mapped:
    """Apply ``rules`` to ``source`` (name -> (dtype, shape)) in ``direction``.

    Raises :class:`KeyMapError` when the rules map a name twice or a fused tensor cannot be split
    evenly. Source names no rule claims come back as ``unmatched``; names the rules need that are
    absent come back as ``missing``; nothing is invented for them.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    problems = check_rules(rules)
    if problems:
        raise KeyMapError("key map is ambiguous: " + "; ".join(problems[:5]))
    targets: list[TargetTensor] = []
    missing: list[str] = []
    claimed: set[str] = set()
    for rule in rules:
        names = rule.sources(direction)
        absent = [n for n in names if n not in source]
        if absent:
            missing.extend(absent)
            continue
        claimed.update(names)
        outs = rule.targets(direction)
        infos = [source[n] for n in names]
        dtype = infos[0][0]
        if any(info[0] != dtype for info in infos):
            raise KeyMapError(f"tensors to concatenate have different dtypes: {', '.join(names)}")
        if rule.op == "rename":
            shape = infos[0][1]
            targets.append(TargetTensor(target_prefix + outs[0], dtype, shape,
                                        _whole(names[0], nbytes_for(dtype, _numel(shape)))))
        elif rule.op == "squeeze":
            shape = infos[0][1]
            if direction == "to_diffusers":
                if len(shape) < 2 or any(d != 1 for d in shape[2:]):
                    raise KeyMapError(f"expected a 1x1 convolution weight, found shape {list(shape)}", where=names[0])
                new = shape[:2]
            else:
                new = (*shape, 1, 1)
            targets.append(TargetTensor(target_prefix + outs[0], dtype, tuple(new),
                                        _whole(names[0], nbytes_for(dtype, _numel(shape)))))
        elif rule.op == "transpose":
            shape = infos[0][1]
            if len(shape) != 2:
                raise KeyMapError(f"expected a 2-D tensor to transpose, found shape {list(shape)}", where=names[0])
            targets.append(TargetTensor(target_prefix + outs[0], dtype, (shape[1], shape[0]),
                                        _whole(names[0], nbytes_for(dtype, _numel(shape))), "transpose"))
        elif rule.op == "swap":
            shape = infos[0][1]
            if not shape or shape[0] % 2:
                raise KeyMapError(f"cannot swap the halves of shape {list(shape)}", where=names[0])
            half = nbytes_for(dtype, _numel(shape) // 2)
            targets.append(TargetTensor(target_prefix + outs[0], dtype, shape,
                                        (SourcePart(names[0], half, 2 * half), SourcePart(names[0], 0, half))))
        elif direction == "to_diffusers":  # split along dim 0
            shape = infos[0][1]
            sizes = rule.sizes or ((shape[0] // len(outs),) * len(outs) if shape else ())
            if not shape or sum(sizes) != shape[0]:
                wanted = f"parts of {list(rule.sizes)} rows" if rule.sizes else f"{len(outs)} equal parts"
                raise KeyMapError(f"cannot split shape {list(shape)} into {wanted}", where=names[0])
            start = 0
            for rows, out in zip(sizes, outs, strict=True):
                part_shape = (rows, *shape[1:])
                size = nbytes_for(dtype, _numel(part_shape))
                targets.append(TargetTensor(target_prefix + out, dtype, part_shape,
                                            (SourcePart(names[0], start, start + size),)))
                start += size
        else:  # concatenation along dim 0
            first = infos[0][1]
            rows = list(rule.sizes) or [first[0] if first else 0] * len(names)
            if any(not info[1] or info[1][0] != r or info[1][1:] != first[1:] for info, r in zip(infos, rows, strict=True)):
                wanted = f" (rows {rows})" if rule.sizes else ""
                raise KeyMapError(f"tensors to concatenate have different shapes{wanted}: {', '.join(names)}")
            targets.append(TargetTensor(target_prefix + outs[0], dtype, (sum(rows), *first[1:]),
                                        tuple(SourcePart(n, 0, nbytes_for(dtype, _numel(info[1])))
                                              for n, info in zip(names, infos, strict=True))))
    unmatched = tuple(n for n in source if n not in claimed)
    return Mapped(tuple(targets), unmatched, tuple(missing))


def _numel(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out

