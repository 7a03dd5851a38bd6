"""assetkit: a model asset manager and converter for diffusion models.

The public Python API. Importing it is cheap: torch and diffusers load only where models are
instantiated.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import AssetkitError, FormatError, UnsafeInputError, UnsupportedFormatError  # noqa: E402
from .findings import Finding  # noqa: E402
from .formats import Asset, TensorInfo, open_asset  # noqa: E402
from .registry import Registry  # noqa: E402

__all__ = [
    "Asset",
    "AssetkitError",
    "Finding",
    "FormatError",
    "Registry",
    "TensorInfo",
    "UnsafeInputError",
    "UnsupportedFormatError",
    "__version__",
    "open_asset",
]
