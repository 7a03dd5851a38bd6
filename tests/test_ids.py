"""The ``Literal`` ids of :mod:`assetkit.ids` against the catalogue and the code that uses them:
a catalogue file that drifts (a family added, a kind renamed) fails here."""

from __future__ import annotations

from assetkit import catalogue, ids
from assetkit.check.scan import VERDICTS
from assetkit.factory import FIXTURES
from assetkit.findings import SEVERITIES


def test_catalogue_ids_match_the_literal_types() -> None:
    families = catalogue.load("families.json")
    assert ids.ids(ids.Family) == tuple(families["families"])
    assert ids.ids(ids.Kind) == tuple(families["kinds"])
    assert ids.ids(ids.Variant) == tuple(families["variants"])
    assert ids.ids(ids.PredictionType) == tuple(families["prediction_types"])
    assert ids.ids(ids.Layout) == tuple(families["layouts"])
    assert ids.ids(ids.TextEncoderType) == tuple(families["text_encoders"])


def test_catalogue_schema() -> None:
    """The fields the probe reads from every family row are there, with the right types."""
    families = catalogue.load("families.json")
    for family_id, row in families["families"].items():
        assert isinstance(row, dict), family_id
        assert row.get("denoiser") in ("unet", "transformer"), family_id
        if row["denoiser"] == "unet":
            assert isinstance(row["unet"], dict) and "context_dim" in row["unet"], family_id
        vae_of = row.get("vae_of")
        assert vae_of is None or vae_of in families["families"], family_id
    for type_id, row in families["text_encoders"].items():
        assert isinstance(row["hidden"], int), type_id
    for channels, variant in families["unet_in_channels_variants"].items():
        assert channels.isdigit() and (variant is None or variant in families["variants"]), channels


def test_code_ids_match_the_literal_types() -> None:
    assert ids.ids(ids.Severity) == SEVERITIES
    assert ids.ids(ids.ScanVerdict) == VERDICTS
    for spec in FIXTURES.values():  # every expected verdict of the fixture factory uses known ids
        expected = spec.expected
        assert expected.kind in ids.ids(ids.Kind), spec
        assert expected.family is None or expected.family in ids.ids(ids.Family), spec
        assert expected.layout is None or expected.layout in ids.ids(ids.Layout), spec
