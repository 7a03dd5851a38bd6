"""Errors of the team remote: each prints as one line (see :mod:`assetkit.errors`)."""

from __future__ import annotations

from ...errors import AssetkitError


class RemoteError(AssetkitError):
    """The remote cannot be used as asked: bad URL, unknown remote, unreachable store, access denied."""


class RemoteNotFoundError(RemoteError):
    """A blob or manifest asked for is not on the remote."""


class RemoteIntegrityError(RemoteError):
    """Bytes that do not hash to their address, or a store whose answer does not match what we sent.

    Exit code 1: the transfer ran and found a problem; nothing wrong entered the local store.
    """

    exit_code = 1
