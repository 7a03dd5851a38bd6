"""``assetkit check``: the pre-deployment gate over a spec or a lock.

Lock integrity (a lock whose files changed is refused), safety and validity of every file (scan,
validate), compatibility (headers only), then assembly and the smoke generation. Each stage is a
JUnit suite of findings; the result passes only when every stage ran and none failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AssetkitError
from ..findings import Finding


@dataclass
class CheckResult:
    target: str
    suites: dict[str, list[Finding]] = field(default_factory=dict)
    compat: dict[str, Any] | None = None
    smoke: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    report: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.failing for fs in self.suites.values() for f in fs)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "target": self.target,
                "suites": {s: {"ok": not any(f.failing for f in fs), "findings": [f.to_dict() for f in fs]}
                           for s, fs in self.suites.items()},
                "compatibility": self.compat, "smoke": self.smoke.to_dict() if self.smoke else None,
                "timings": {k: round(v, 4) for k, v in self.timings.items()}, "report": self.report}


def load_target(path: Path, *, hub: bool = False) -> tuple[Any, Any, dict[str, Any], list[Finding]]:
    """(spec, lock or None, sources, lock findings) for a spec or lock file; ``hub``: Hub ids
    are resolved (and a lock's Hub components downloaded at their pinned commits when missing)."""
    from .lock import is_lock_file, locate, read_lock, verify_lock
    from .sources import fetch_missing, resolve_spec
    from .spec import load_spec

    if is_lock_file(path):
        lock = read_lock(path)
        locate(lock, hub=hub)  # registry content id, then registry name, then the stored path
        fetch_missing(lock, None)  # the team remote's hook: pulls pinned blobs that are missing here
        return lock.spec, lock, lock.sources(), verify_lock(lock)
    spec = load_spec(path)
    return spec, None, resolve_spec(spec, hub=hub), []


def validate_files(sources: dict[str, Any]) -> list[Finding]:
    """scan + validate of every component (a failing file names its role)."""
    from ..check.scan import scan_paths
    from ..check.validate import validate_path
    from .spec import BASE_CONFIG_ROLE

    findings: list[Finding] = []
    for role, src in sources.items():
        if role == BASE_CONFIG_ROLE:  # configs, not a checkpoint: pinned by the lock, read by the conversion
            continue
        for result in scan_paths([src.path]):
            if result.verdict != "safe":
                findings.append(Finding("scan-" + result.verdict, "error" if result.verdict != "unsafe" else "dangerous",
                                        f"{result.path}: scan verdict {result.verdict}", role))
                findings += [Finding(f.code, f.severity, f.message, f"{role}: {f.where}") for f in result.findings
                             if f.failing]
        try:
            report = validate_path(src.path)
        except AssetkitError as exc:  # not a checkpoint at all: this component fails, the gate still reports
            findings.append(Finding("validate-unreadable", "error", str(exc), role))
            continue
        findings += [Finding(f.code, f.severity, f.message, f"{role}: {f.where}" if f.where else role)
                     for f in report.problems if f.failing or f.severity == "warning"]
    return findings


def run_check(path: Path, *, device: str = "auto", smoke: bool = True, report_dir: Path | None = None,
              junit: Path | None = None, hub: bool = False) -> CheckResult:
    from .compat import check_compatibility

    t0 = time.perf_counter()
    spec, lock, sources, lock_findings = load_target(path, hub=hub)
    result = CheckResult(str(path))
    if lock is not None:
        result.suites["lock"] = lock_findings
    lock_failed = any(f.failing for f in lock_findings)
    # a failed lock stage: the files found (or the spec) are not the locked ones: no later stage runs on them
    result.suites["validate"] = _not_run("validate", "scan and validate") if lock_failed else validate_files(sources)
    t1 = time.perf_counter()
    if lock_failed:
        result.suites["compatibility"] = _not_run("compatibility", "compatibility")
    else:
        try:
            compat = check_compatibility(spec, sources)
        except AssetkitError as exc:  # a missing or unreadable component (already a validate error)
            result.suites["compatibility"] = [Finding("compatibility-not-run", "error",
                                                      f"compatibility not checked: {exc}", "compatibility")]
        else:
            result.compat = compat.to_dict()
            result.suites["compatibility"] = compat.findings
    result.timings |= {"validate": t1 - t0, "compatibility": time.perf_counter() - t1}
    if smoke:
        if result.ok:
            result.smoke = _smoke(spec, sources, device)
            result.suites["smoke"] = result.smoke.findings
        elif lock_failed:
            result.suites["smoke"] = _not_run("smoke", "smoke generation")
        else:
            result.suites["smoke"] = [Finding("smoke-not-run", "error",
                                              "smoke generation not run: an earlier check failed", "smoke")]
    result.timings["total"] = time.perf_counter() - t0
    write_outputs(result, report_dir, junit)
    return result


def _not_run(stage: str, what: str) -> list[Finding]:
    """The finding of a stage that did not run because the lock stage failed."""
    return [Finding(f"{stage}-not-run", "error",
                    f"{what} not run: the lock stage failed, so what would run is not what was locked", stage)]


def _smoke(spec: Any, sources: dict[str, Any], device: str, config_hint: str | None = None) -> Any:
    from .assemble import SPEC_CONFIG_HINT, assemble
    from .smoke import SmokeResult, smoke

    try:
        assembled = assemble(spec, sources, device=device, config_hint=config_hint or SPEC_CONFIG_HINT)
    except AssetkitError as exc:
        return SmokeResult(findings=[Finding("assemble-failed", "error", str(exc), "assemble")])
    except Exception as exc:  # noqa: BLE001 - diffusers refusing the combination is a finding, not a crash
        return SmokeResult(findings=[Finding("assemble-failed", "error", f"{type(exc).__name__}: {exc}", "assemble")])
    try:
        out = smoke(assembled, spec) if not any(f.failing for f in assembled.findings) else SmokeResult()
    except Exception as exc:  # noqa: BLE001 - a generation that raises failed the gate (exit 1, reports written)
        out = SmokeResult(findings=[Finding("smoke-failed", "error",
                                            f"the generation raised {type(exc).__name__}: {exc}", "smoke")])
    out.findings[:0] = assembled.findings
    out.device, out.dtype = assembled.device, assembled.dtype
    out.timings.setdefault("load", assembled.load_seconds)
    return out


def write_outputs(result: CheckResult, report_dir: Path | None, junit: Path | None) -> None:
    from .report import _write, junit_bytes, write_report

    if report_dir is not None:
        images = result.smoke.images if result.smoke else []
        written = write_report(report_dir, result.to_dict(), result.suites, images)
        result.report = {k: str(v) for k, v in written.items()}
    if junit is not None:
        _write(junit, junit_bytes(result.target, result.suites))
        result.report["junit_file"] = str(junit)


def smoke_one(name: str, *, device: str = "auto", steps: int = 4, size: int | None = None,
              report_dir: Path | None = None, junit: Path | None = None, hub: bool = False,
              config: Path | None = None) -> CheckResult:
    """``assetkit smoke``: the smoke part alone for one model (a path or registry name);
    ``config``: a single file's own diffusers configs (instead of the catalogue's)."""
    from ..convert.layout_convert import CONFIG_HINT
    from .sources import resolve_spec
    from .spec import PipelineSpec, limit_problem

    for key, value in (("steps", steps), ("height", size)):
        if value is not None and (problem := limit_problem(key, value)):
            raise AssetkitError(f"{'--steps' if key == 'steps' else '--size'} {problem}")
    spec = PipelineSpec(base=name, base_config=str(config) if config is not None else None,
                        source=Path.cwd() / "smoke", label="assetkit smoke")
    spec.smoke.steps = steps
    if size:
        spec.smoke.height = spec.smoke.width = size
    result = CheckResult(name)
    try:
        sources = resolve_spec(spec, hub=hub)
    except AssetkitError as exc:  # no spec lines to name: the argument and what was tried
        raise AssetkitError(exc.message) from None
    result.smoke = _smoke(spec, sources, device, CONFIG_HINT)
    result.suites["smoke"] = result.smoke.findings
    write_outputs(result, report_dir, junit)
    return result
