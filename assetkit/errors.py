"""Error types. Every user-facing failure is one of these and prints as one line.

Exit codes (DESIGN.md, Contracts): 0 ok, 1 the check ran and found problems, 2 usage error or
unreadable input. An :class:`AssetkitError` maps to exit code 2 unless it says otherwise.
"""

from __future__ import annotations


class AssetkitError(Exception):
    """Base class: a problem the user can act on, described in one line."""

    exit_code = 2

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class FormatError(AssetkitError):
    """The bytes do not follow the container format they claim (or that we detected)."""

    def __init__(self, message: str, where: str | None = None, code: str = "format") -> None:
        super().__init__(message, where)
        self.code = code


class UnsupportedFormatError(AssetkitError):
    """The path exists but is not a format assetkit reads (a PNG, a 7z archive, an empty folder...)."""


class UnsafeInputError(AssetkitError):
    """The input holds code or names that assetkit refuses to act on (see scan findings)."""

    exit_code = 1

    def __init__(self, message: str, where: str | None = None, findings: list | None = None) -> None:
        super().__init__(message, where)
        self.findings = list(findings or [])


class OutputExistsError(AssetkitError):
    """Refusing to overwrite an existing output without --overwrite."""


class VerificationError(AssetkitError):
    """A written output did not re-read identical to its source."""

    exit_code = 1


class IncompleteInputError(AssetkitError):
    """The input lacks parts the result needs (a missing shard, nothing convertible): the command
    ran and cannot produce a complete result, so it writes nothing and fails (exit 1)."""

    exit_code = 1
