"""Team remotes of the user's registry: the same content-addressed blobs on an S3-compatible store.

(The top-level ``registry/`` folder is the built-in catalogue; this is code for the user's store.)
"""

from __future__ import annotations

from .config import RemoteConfig
from .errors import RemoteError, RemoteIntegrityError, RemoteNotFoundError
from .s3 import PendingUpload, RemoteBlob, S3BlobStore, part_size_for
from .url import RemoteSpec, check_remote_name

__all__ = [
    "PendingUpload",
    "RemoteBlob",
    "RemoteConfig",
    "RemoteError",
    "RemoteIntegrityError",
    "RemoteNotFoundError",
    "RemoteSpec",
    "S3BlobStore",
    "check_remote_name",
    "part_size_for",
]
