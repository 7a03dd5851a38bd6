"""pipeline: specs, locks and compatibility (light: no torch at import); assemble, smoke and the
report (heavy: torch and diffusers are imported inside those functions only)."""

from __future__ import annotations

from .compat import CompatReport, check_compatibility
from .lock import Lock, lock_spec, missing_blobs, read_lock, verify_lock, write_lock
from .sources import Source, fetch_missing, resolve
from .spec import PipelineSpec, SpecError, load_spec, parse_spec

__all__ = ["CompatReport", "Lock", "PipelineSpec", "Source", "SpecError", "check_compatibility", "fetch_missing",
           "load_spec", "lock_spec", "missing_blobs", "parse_spec", "read_lock", "resolve", "verify_lock",
           "write_lock"]
