"""What the probe answers: one :class:`Verdict` per prober that recognised something, ranked into a
:class:`ProbeResult` (the best verdict, every candidate, the evidence, the components).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..findings import Finding


@dataclass
class Component:
    """One part of a full checkpoint or pipeline folder (UNet, VAE, a text encoder...)."""

    name: str
    kind: str
    family: str | None
    parameters: int
    bytes: int
    dtypes: dict[str, int]
    tensors: int
    layout: str | None = None
    source: str = ""  #: the name prefix in a single file, or the subfolder of a pipeline
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "family": self.family,
            "layout": self.layout,
            "source": self.source,
            "tensors": self.tensors,
            "parameters": self.parameters,
            "bytes": self.bytes,
            "dtypes": dict(self.dtypes),
            "details": dict(self.details),
        }


@dataclass
class Verdict:
    """One prober's answer to "is this me?".

    ``score`` is in [0, 1]: how much of the prober's signature is present, weighted by how many
    of the tensors the verdict explains. ``family`` is None when the tensors cannot tell;
    ``families`` then lists what it could be (an ambiguity, never a guess).
    """

    kind: str
    family: str | None
    layout: str | None
    score: float
    prober: str
    variant: str | None = None
    prediction_type: str | None = None
    families: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    components: dict[str, Component] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def family_options(self) -> list[str]:
        """The family, or every family the verdict leaves open."""
        if self.family is not None:
            return [self.family]
        return list(self.families)


@dataclass(frozen=True)
class Candidate:
    """One (kind, family) reading of the asset and its score, for the ranked candidate list."""

    kind: str
    family: str | None
    layout: str | None
    score: float
    prober: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "family": self.family,
            "layout": self.layout,
            "score": round(self.score, 3),
            "prober": self.prober,
        }


@dataclass
class ProbeResult:
    """The identification of one asset, with the evidence that decided it."""

    kind: str
    family: str | None
    variant: str | None
    prediction_type: str | None
    layout: str | None
    evidence: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    components: dict[str, Component] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line: ``sd1 pipeline (inpaint, epsilon), original layout``."""
        what = " ".join(part for part in (self.family or "unknown-family", self.kind) if part)
        extras = [x for x in (self.variant, self.prediction_type) if x]
        if extras:
            what += f" ({', '.join(extras)})"
        if self.layout:
            what += f", {self.layout} layout"
        return what

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "family": self.family,
            "variant": self.variant,
            "prediction_type": self.prediction_type,
            "layout": self.layout,
            "evidence": list(self.evidence),
            "details": dict(self.details),
            "components": {name: comp.to_dict() for name, comp in self.components.items()},
            "candidates": [c.to_dict() for c in self.candidates],
            "findings": [f.to_dict() for f in self.findings],
        }
