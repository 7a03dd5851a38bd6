"""The package as pip builds it: every subpackage and the catalogue ship in the wheel."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from assetkit.catalogue import catalogue_dir

REPO = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "assetkit").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert "assetkit._catalogue" in listed


@pytest.mark.slow
def test_wheel_carries_the_catalogue(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(REPO)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("assetkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in sorted(p.name for p in (REPO / "registry").glob("*.json")):
        assert f"assetkit/_catalogue/{data}" in names
    assert "assetkit/probe/__init__.py" in names and "assetkit/cli/__init__.py" in names


def test_source_checkout_reads_the_registry_folder() -> None:
    assert (catalogue_dir() / "families.json").is_file()
