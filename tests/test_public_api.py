"""The flat public API: ``import assetkit`` is cheap, every exported name resolves to the object
of the layer it comes from, and every public error type is there."""

from __future__ import annotations

import inspect
import subprocess
import sys

import assetkit
from assetkit import errors


def test_import_assetkit_loads_no_heavy_module() -> None:
    code = ("import sys, assetkit; heavy = [m for m in ('numpy', 'torch', 'diffusers', 'click', 'assetkit.formats') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_every_exported_name_resolves_to_its_layer() -> None:
    from assetkit.check.scan import scan_path
    from assetkit.check.validate import validate_path
    from assetkit.convert import convert_file
    from assetkit.formats import open_asset
    from assetkit.probe import probe

    assert assetkit.open_asset is open_asset
    assert assetkit.identify is probe
    assert assetkit.scan is scan_path
    assert assetkit.validate is validate_path
    assert assetkit.convert_file is convert_file
    assert set(assetkit._LAZY) <= set(assetkit.__all__)
    for name in assetkit.__all__:
        assert getattr(assetkit, name) is not None, name
    assert set(assetkit.__all__) <= set(dir(assetkit))


def test_subpackage_names_stay_subpackages() -> None:
    import assetkit.convert
    import assetkit.probe

    assert inspect.ismodule(assetkit.probe) and inspect.ismodule(assetkit.convert)
    assert assetkit.probe.probe is assetkit.identify


def test_every_public_error_type_is_exported() -> None:
    public = {name for name, value in vars(errors).items()
              if inspect.isclass(value) and issubclass(value, Exception) and not name.startswith("_")}
    assert public <= set(assetkit.__all__)
    assert {"PickleVMError", "PickleLimitError"} <= set(assetkit.__all__)
    assert issubclass(assetkit.PickleVMError, assetkit.FormatError)


def test_the_api_works_end_to_end(tmp_path) -> None:
    from assetkit.factory import make_fixture

    path = make_fixture("vae_sd", tmp_path, "torch-zip")
    assert assetkit.scan(path).verdict == "safe"
    report = assetkit.convert_file(path, tmp_path / "vae.safetensors")
    assert report.verified
    with assetkit.open_asset(tmp_path / "vae.safetensors") as asset:
        assert assetkit.identify(asset).kind == "vae"
    assert assetkit.validate(tmp_path / "vae.safetensors").ok
