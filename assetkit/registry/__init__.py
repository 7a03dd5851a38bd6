"""registry: the code of the user's local registry (content-addressed blobs + SQLite index).

Not to be confused with the top-level ``registry/`` folder of the repository, which is the
built-in, read-only catalogue (families, signatures, default configs) shipped as
``assetkit._catalogue``; this package stores what the user adds, and reads that layer.
"""

from __future__ import annotations

from .add import AddResult, check_name
from .api import NotFoundError, Registry, default_root
from .blobs import BlobError, BlobStore, LocalBlobStore
from .records import AssetRecord, FileRecord

__all__ = ["AddResult", "AssetRecord", "BlobError", "BlobStore", "FileRecord", "LocalBlobStore", "NotFoundError",
           "Registry", "check_name", "default_root"]
