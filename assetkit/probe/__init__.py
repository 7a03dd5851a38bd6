"""probe: what a checkpoint is (kind, family, variant, prediction type, key layout) and why.

Works on the lazy tensor index of an :class:`~assetkit.formats.base.Asset` (names, shapes,
dtypes), its metadata and its configs; never on tensor data, except the few bytes of a LoRA's
scalar ``.alpha`` tensors. One small prober per kind answers "is this me?" with a score and
evidence; every verdict is kept as a candidate and the best one wins. Knowledge (signature keys,
decisive shapes, family table, class names) is data in ``registry/``.
"""

from __future__ import annotations

from .engine import PROBERS, probe
from .report import inspect_report
from .result import Candidate, Component, ProbeResult, Verdict

__all__ = ["PROBERS", "Candidate", "Component", "ProbeResult", "Verdict", "inspect_report", "probe"]
