"""assetkit: a model asset manager and converter for diffusion models.

The public Python API, flat and lazy: ``import assetkit`` loads nothing but the error types
(no numpy, torch or diffusers); each name below imports its layer the first time it is used::

    import assetkit
    with assetkit.open_asset("model.safetensors") as asset:   # headers only
        result = assetkit.identify(asset)                     # kind, family, variant... + evidence
    assetkit.scan("model.ckpt").verdict                       # never runs the pickle
    assetkit.validate("pipeline_dir").ok
    assetkit.convert_file("model.ckpt", "model.safetensors")  # streaming, verified

``probe`` and ``convert`` stay the names of their subpackages (``assetkit.probe.probe``,
``assetkit.convert.convert_file``); the functions are exported under what they do
(:func:`identify`, :func:`convert_file`), so the two never collide.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .errors import (  # noqa: E402 - cheap: plain exception classes
    AssetkitError,
    FormatError,
    IncompleteInputError,
    OutputExistsError,
    UnsafeInputError,
    UnsupportedFormatError,
    VerificationError,
)

#: public name -> (module, attribute) it is imported from on first use
_LAZY: dict[str, tuple[str, str]] = {
    "Asset": ("assetkit.formats", "Asset"),
    "TensorInfo": ("assetkit.formats", "TensorInfo"),
    "open_asset": ("assetkit.formats", "open_asset"),
    "Finding": ("assetkit.findings", "Finding"),
    "identify": ("assetkit.probe", "probe"),
    "inspect_report": ("assetkit.probe", "inspect_report"),
    "ProbeResult": ("assetkit.probe", "ProbeResult"),
    "scan": ("assetkit.check.scan", "scan_path"),
    "scan_paths": ("assetkit.check.scan", "scan_paths"),
    "ScanResult": ("assetkit.check.scan", "ScanResult"),
    "validate": ("assetkit.check.validate", "validate_path"),
    "ValidationReport": ("assetkit.check.validate", "ValidationReport"),
    "convert_file": ("assetkit.convert", "convert_file"),
    "convert_tree": ("assetkit.convert", "convert_tree"),
    "convert_variant_folder": ("assetkit.convert", "convert_variant_folder"),
    "ConvertReport": ("assetkit.convert", "ConvertReport"),
    "BatchReport": ("assetkit.convert", "BatchReport"),
    "PickleVMError": ("assetkit.formats.pickle_vm", "PickleVMError"),
    "PickleLimitError": ("assetkit.formats.pickle_vm", "PickleLimitError"),
    "Registry": ("assetkit.registry", "Registry"),
}
#: subpackages reachable as attributes without an import statement
_SUBPACKAGES = frozenset({"catalogue", "check", "convert", "factory", "findings", "formats", "ids", "probe", "registry"})

__all__ = [  # the errors above and every _LAZY name (tests/test_public_api.py checks the two agree)
    "Asset", "AssetkitError", "BatchReport", "ConvertReport", "Finding", "FormatError", "IncompleteInputError",
    "OutputExistsError", "PickleLimitError", "PickleVMError", "ProbeResult", "Registry", "ScanResult", "TensorInfo",
    "UnsafeInputError", "UnsupportedFormatError", "ValidationReport", "VerificationError", "__version__",
    "convert_file", "convert_tree", "convert_variant_folder", "identify", "inspect_report", "open_asset", "scan",
    "scan_paths", "validate",
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is not None:
        value = getattr(importlib.import_module(target[0]), target[1])
        globals()[name] = value  # resolved once
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'assetkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBPACKAGES)


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .check.scan import ScanResult, scan_paths
    from .check.scan import scan_path as scan
    from .check.validate import ValidationReport
    from .check.validate import validate_path as validate
    from .convert import BatchReport, ConvertReport, convert_file, convert_tree, convert_variant_folder
    from .findings import Finding
    from .formats import Asset, TensorInfo, open_asset
    from .formats.pickle_vm import PickleLimitError, PickleVMError
    from .probe import ProbeResult, inspect_report
    from .probe import probe as identify
    from .registry import Registry
