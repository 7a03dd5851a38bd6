"""Typed access to the catalogue data the probe needs (``registry/*.json``; parsed once, cached
by :func:`assetkit.catalogue.load`)."""

from __future__ import annotations

import functools
from typing import Any

from .. import catalogue


def families() -> dict[str, Any]:
    return catalogue.load("families.json")


def signatures() -> dict[str, Any]:
    return catalogue.load("signatures.json")


def metadata_rules() -> dict[str, Any]:
    return catalogue.load("metadata.json")


def diffusers_classes() -> dict[str, Any]:
    return catalogue.load("diffusers_classes.json")


def family_table() -> dict[str, dict[str, Any]]:
    return families()["families"]


def text_encoder_types() -> dict[str, dict[str, Any]]:
    return families()["text_encoders"]


@functools.cache
def unet_families() -> list[tuple[str, dict[str, Any]]]:
    """(family, unet signature) for every UNet family, in catalogue order."""
    return [(fid, row["unet"]) for fid, row in family_table().items() if row.get("denoiser") == "unet"]


def families_by_context_dim(context_dim: int | None) -> list[str]:
    return [fid for fid, unet in unet_families() if unet.get("context_dim") == context_dim]


def families_by_latent_channels(channels: int | None) -> list[str]:
    """Families whose VAE has ``channels`` latent channels (a family that reuses another's VAE,
    such as the SDXL refiner, is represented by that family)."""
    return [fid for fid, row in family_table().items()
            if row.get("latent_channels") == channels and not row.get("vae_of")]


def text_encoder_type(layout_group: str, hidden: int | None) -> str | None:
    """``clip-l``/``openclip-h``/``openclip-bigg``/``t5-xxl`` from the layout group and width."""
    for type_id, row in text_encoder_types().items():
        is_t5 = type_id.startswith("t5")
        if row["hidden"] == hidden and (is_t5 == (layout_group == "t5")):
            return type_id
    return None


def variant_for_unet_in_channels(channels: int | None) -> tuple[bool, str | None]:
    """(known, variant) for a UNet ``conv_in`` input width."""
    table = families()["unet_in_channels_variants"]
    key = str(channels)
    return (key in table, table.get(key))
