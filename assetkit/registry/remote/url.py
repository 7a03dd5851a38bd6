"""Where a remote is: ``s3://bucket/prefix`` plus how to reach it (endpoint, region, profile).

No credentials are ever part of a remote: boto3's standard chain supplies them (environment,
shared config and profiles, instance roles).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

from .errors import RemoteError

# S3 bucket naming rules (3-63 chars, lowercase letters, digits, dots, hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_remote_name(name: str) -> str:
    """A remote's name: letters, digits, ``_.-``, starting with a letter or digit, at most 64 characters."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise RemoteError(f"not a usable remote name: {name!r} (letters, digits, '_', '.', '-')")
    return name


@dataclass(frozen=True)
class RemoteSpec:
    """An S3 location and how to reach it; no secrets."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None, region: str | None = None,
              profile: str | None = None) -> RemoteSpec:
        """``s3://bucket[/prefix]`` -> spec; anything else is one clear error."""
        parsed = urlparse(url or "")
        if parsed.scheme != "s3":
            raise RemoteError(f"remote URL must look like s3://bucket/prefix, got {url!r}")
        if parsed.username or parsed.password or parsed.port or parsed.query or parsed.fragment:
            raise RemoteError(f"remote URL must be s3://bucket/prefix only (no credentials, port or query): {url!r}")
        bucket = parsed.netloc
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise RemoteError(f"not a valid S3 bucket name: {bucket!r}")
        parts = [p for p in parsed.path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise RemoteError(f"remote prefix may not contain '.' or '..': {url!r}")
        if endpoint_url is not None:
            endpoint = urlparse(endpoint_url)
            if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
                raise RemoteError(f"endpoint URL must be http(s)://host[:port], got {endpoint_url!r}")
        return cls(bucket=bucket, prefix="/".join(parts), endpoint_url=endpoint_url or None,
                   region=region or None, profile=profile or None)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["url"] = self.url
        return document

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> RemoteSpec:
        return cls.parse(str(document.get("url", "")), document.get("endpoint_url"), document.get("region"),
                         document.get("profile"))
