"""``validate``: every rule a checkpoint file or diffusers folder must follow, as findings.

Dispatch by what the path is:

* a safetensors file: every rule of the format (:func:`assetkit.formats.safetensors.check_safetensors`);
* a torch zip or legacy pickle file: container hygiene
  (:func:`assetkit.formats.torch_pickle.check_torch_container`);
* a diffusers pipeline or component folder: layout, configs, shards, variants and each model
  component's weights against its class built from ``config.json`` on the meta device
  (:mod:`assetkit.check.folder_check`; the classes come from :mod:`assetkit.check.model_classes`,
  the only part that imports torch/diffusers);
* ``numerics=True`` adds NaN/Inf/all-zero/mixed-dtype checks (:mod:`assetkit.check.numerics`).

A path that cannot be read at all (missing, not a checkpoint, a folder that is no diffusers
layout, a broken ``model_index.json``) raises :class:`~assetkit.errors.AssetkitError`; problems
found inside a readable input are findings, and ``ok`` is False when any of them is failing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AssetkitError, UnsupportedFormatError
from ..findings import Finding, sort_findings
from ..formats import missing_path_error, not_a_checkpoint_error, reads_as_safetensors, sniff_path

__all__ = ["ValidationReport", "validate_path"]


@dataclass
class ValidationReport:
    """The outcome of :func:`validate_path`: ``problems`` holds every finding (warnings and
    infos too); ``ok`` is False when any is failing; ``checked`` says what was looked at."""

    path: str
    ok: bool
    problems: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def failing(self) -> list[Finding]:
        return [f for f in self.problems if f.failing]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "problems": [f.to_dict() for f in self.problems],
            "checked": list(self.checked),
        }


def validate_path(path: str | os.PathLike[str], numerics: bool = False, variant: str | None = None
                  ) -> ValidationReport:
    """Validate one file or folder; see the module docstring."""
    p = Path(path)
    if not p.exists():
        raise missing_path_error(p)
    if p.is_dir():
        from .folder_check import check_diffusers_folder

        findings, checked = check_diffusers_folder(p, variant=variant, numerics=numerics)
    elif p.is_file():
        findings, checked = _check_file(p, numerics)
        if variant is not None:
            checked.append(f"variant {variant!r} ignored: it applies to diffusers folders only")
    else:
        raise UnsupportedFormatError("not a regular file or folder", where=str(p))
    findings = sort_findings(findings)
    return ValidationReport(str(p), ok=not any(f.failing for f in findings), problems=findings, checked=checked)


def _check_file(path: Path, numerics: bool) -> tuple[list[Finding], list[str]]:
    kind = sniff_path(path)
    if reads_as_safetensors(kind, path):
        # a broken .safetensors is a malformed checkpoint, not an unreadable input: report every rule it breaks
        from ..formats.safetensors import check_safetensors

        findings = list(check_safetensors(path))
        checked = ["safetensors format rules"]
    elif kind in ("zip", "pickle"):
        from ..formats.torch_pickle import check_torch_container

        findings = list(check_torch_container(path))
        checked = ["torch container rules"]
    else:
        raise not_a_checkpoint_error(kind, path)

    if numerics:
        if any(f.failing for f in findings):
            checked.append("numerics skipped: the container is invalid")
        else:
            from ..formats import open_asset
            from .numerics import check_numerics

            try:
                with open_asset(path) as asset:
                    findings.extend(check_numerics(asset, where=path.name))
                checked.append("numerics")
            except AssetkitError as exc:
                findings.append(Finding("numerics-unreadable", "error", str(exc), path.name))
    return findings, checked
