"""Every fixture of the factory, in every container it comes in, gets the verdict its spec states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assetkit import catalogue
from assetkit.factory import FIXTURES, make_fixture
from assetkit.formats import open_asset
from assetkit.probe import inspect_report, probe

CASES = [(fid, container) for fid, spec in FIXTURES.items() for container in spec.containers]
#: details the spec states about the file rather than about the model: where the report keeps them.
ASSET_FACTS = {"unknown_globals", "global_step", "metadata_contradiction"}


def _vae_family(family: str) -> str:
    """A family whose VAE is another family's (the SDXL refiner's is SDXL's) counts as that family."""
    return catalogue.load("families.json")["families"].get(family, {}).get("vae_of") or family


@pytest.mark.parametrize(("fixture_id", "container"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_fixture_verdict(tmp_path: Path, fixture_id: str, container: str) -> None:
    spec = FIXTURES[fixture_id]
    expected = spec.expected
    path = make_fixture(fixture_id, tmp_path, container)
    with open_asset(path) as asset:
        result = probe(asset)
        report: dict[str, Any] = inspect_report(asset, result=result)
    got = (result.kind, result.family, result.variant, result.prediction_type, result.layout)
    assert got == expected.verdict(), result.evidence
    for key, value in expected.details.items():
        if key == "unknown_globals":
            assert report["unknown_globals"] == value
        elif key == "global_step":
            assert report["metadata"]["global_step"] == value
        elif key == "metadata_contradiction":
            assert ("metadata-contradiction" in {f.code for f in result.findings}) == value
        else:
            assert result.details.get(key) == value, (key, result.details)
    if expected.family_candidates:
        allowed = {_vae_family(f) if result.kind == "vae" else f for f in expected.family_candidates}
        offered = {c.family for c in result.candidates if c.kind == result.kind}
        # Never a guess: still ambiguous, and only among what the spec allows (a config may narrow it).
        assert result.family is None and len(offered) >= 2 and offered <= allowed, offered
    if result.kind == "unknown":
        pytest.fail(f"{fixture_id}: not identified")


FULL = [fid for fid, spec in FIXTURES.items() if "safetensors" in spec.containers]


@pytest.mark.parametrize("fixture_id", FULL)
def test_full_size_fixture_verdict(tmp_path: Path, fixture_id: str) -> None:
    """The same verdict from every real shape (a zero-filled sparse file) as from the tiny file."""
    path = make_fixture(fixture_id, tmp_path, "safetensors", full=True)
    with open_asset(path) as asset:
        result = probe(asset)
    assert (result.kind, result.family, result.variant, result.prediction_type, result.layout) == \
        FIXTURES[fixture_id].expected.verdict(), result.evidence


def test_every_kind_and_family_is_covered() -> None:
    kinds = {spec.expected.kind for spec in FIXTURES.values()}
    families = {spec.expected.family for spec in FIXTURES.values()} - {None}
    assert {"pipeline", "unet", "transformer", "vae", "text_encoder", "lora", "controlnet", "textual_inversion",
            "ip_adapter", "t2i_adapter"} <= kinds
    assert {"sd1", "sd2", "sdxl", "sdxl-refiner", "sd3", "flux"} <= families
