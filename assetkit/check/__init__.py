"""check: scan (no pickle ever runs) and validate (no malformed file passes)."""
