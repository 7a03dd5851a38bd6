"""One way to report a problem: :class:`Finding`, shared by scan, validate, compatibility and smoke.

Renderers turn findings into text, JSON-ready dicts and JUnit XML for CI systems.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

#: Severities, most severe first. ``dangerous`` and ``error`` make a check fail;
#: ``suspicious`` makes a scan verdict unsafe; ``warning`` and ``info`` never fail a check.
SEVERITIES = ("dangerous", "error", "suspicious", "warning", "info")
FAILING = frozenset({"dangerous", "error", "suspicious"})


@dataclass(frozen=True)
class Finding:
    """A single observation about an asset.

    ``code`` is a stable machine id (``unsafe-global``, ``st-offsets-gap``...), ``where`` points
    at the place (a file, ``file:member``, a tensor name, an opcode position).
    """

    code: str
    severity: str
    message: str
    where: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def failing(self) -> bool:
        return self.severity in FAILING

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def to_text(self) -> str:
        where = f" [{self.where}]" if self.where else ""
        return f"{self.severity:<10} {self.code}: {self.message}{where}"


def worst(findings: Iterable[Finding]) -> str | None:
    """The most severe severity among ``findings`` (None when empty)."""
    ranks = [SEVERITIES.index(f.severity) for f in findings]
    return SEVERITIES[min(ranks)] if ranks else None


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), f.where, f.code))


def truncated(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``...`` when it was cut: the one
    truncation every message and rendering uses."""
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def capped(items: Sequence[str], limit: int) -> str:
    """The first ``limit`` of ``items`` joined by commas, then ``(+N more)`` for the rest: a list
    of names kept short enough for a one-line message."""
    shown = ", ".join(items[:limit])
    return f"{shown} (+{len(items) - limit} more)" if len(items) > limit else shown


def render_text(findings: Sequence[Finding]) -> str:
    return "\n".join(f.to_text() for f in sort_findings(findings))


def render_junit(suites: Sequence[tuple[str, Sequence[tuple[str, Sequence[Finding]]]]]) -> bytes:
    """JUnit XML: one ``<testsuite>`` per check name, one ``<testcase>`` per path.

    ``suites`` is ``[(suite_name, [(case_name, findings), ...]), ...]``; a case fails when any
    finding is failing; other findings go to ``<system-out>``.
    """
    import xml.etree.ElementTree as ET  # only --junit needs it: every other command starts without

    root = ET.Element("testsuites")
    for suite_name, cases in suites:
        failures = sum(1 for _, fs in cases if any(f.failing for f in fs))
        suite = ET.SubElement(
            root, "testsuite", name=suite_name, tests=str(len(cases)), failures=str(failures), errors="0"
        )
        for case_name, fs in cases:
            case = ET.SubElement(suite, "testcase", classname=suite_name, name=case_name)
            failing = [f for f in fs if f.failing]
            if failing:
                fail = ET.SubElement(
                    case, "failure", message=f"{len(failing)} problem(s)", type=failing[0].severity
                )
                fail.text = render_text(failing)
            rest = [f for f in fs if not f.failing]
            if rest:
                ET.SubElement(case, "system-out").text = render_text(rest)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
