"""check: scan (no pickle ever runs) and validate (no malformed file passes), checkpoint hygiene."""

from .hygiene import Hygiene, hygiene_findings, hygiene_report

__all__ = ["Hygiene", "hygiene_findings", "hygiene_report"]
