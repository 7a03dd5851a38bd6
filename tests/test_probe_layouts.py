"""Every shared layout, written as a full-size zero-filled sparse safetensors file, is identified."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from assetkit.formats import open_asset
from assetkit.probe import probe

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

#: layout file -> (kind, family, layout, variant)
EXPECTED = {
    "sd15.json": ("pipeline", "sd1", "original", None),
    "sd21_768v.json": ("pipeline", "sd2", "original", None),
    "sdxl_base.json": ("pipeline", "sdxl", "original", None),
    "controlnet_sd15.json": ("controlnet", "sd1", "original", None),
    "vae_sd.json": ("vae", None, "original", None),
    "lora_sd15_kohya.json": ("lora", "sd1", "kohya", None),
}


def write_sparse_safetensors(layout: dict, dest: Path, metadata: dict[str, str] | None = None) -> Path:
    """Header from the layout's keys, then a data section that is only a hole (costs no disk)."""
    header: dict[str, object] = {}
    offset = 0
    for name, spec in layout["keys"].items():
        size = math.prod(spec["shape"]) * ITEMSIZE[spec["dtype"]]
        header[name] = {"dtype": spec["dtype"], "shape": spec["shape"], "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(dest, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        fh.truncate(8 + len(blob) + offset)
        for name, entry in header.items():  # real files hold 0..N-1 there; zeros are the broken-ids defect
            if name.endswith("embeddings.position_ids") and entry["dtype"] == "I64":
                fh.seek(8 + len(blob) + entry["data_offsets"][0])
                fh.write(struct.pack(f"<{entry['shape'][-1]}q", *range(entry["shape"][-1])))
    return dest


def _layout(layouts_dir: Path, name: str) -> dict:
    return json.loads((layouts_dir / name).read_text())


def test_every_layout_has_an_expectation(layouts_dir: Path) -> None:
    assert sorted(p.name for p in layouts_dir.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.slow
def test_layout_identified(layouts_dir: Path, tmp_path: Path, name: str) -> None:
    layout = _layout(layouts_dir, name)
    path = write_sparse_safetensors(layout, tmp_path / name.replace(".json", ".safetensors"))
    assert path.stat().st_size == 8 + int.from_bytes(path.read_bytes()[:8], "little") + layout["stats"]["num_bytes"]
    with open_asset(path) as asset:
        assert asset.parameters == layout["stats"]["num_params"]
        result = probe(asset)
    kind, family, key_layout, variant = EXPECTED[name]
    assert (result.kind, result.family, result.layout, result.variant) == (kind, family, key_layout, variant), \
        result.evidence
    assert result.evidence
    assert result.candidates[0].kind == kind
    assert not [f for f in result.findings if f.code == "metadata-contradiction"]


def test_full_checkpoints_list_their_components(layouts_dir: Path, tmp_path: Path) -> None:
    expected = {
        "sd15.json": {"unet": ("unet", 686), "vae": ("vae", 248), "text_encoder": ("text_encoder", 197)},
        "sd21_768v.json": {"unet": ("unet", 686), "vae": ("vae", 248), "text_encoder": ("text_encoder", 294)},
        "sdxl_base.json": {"unet": ("unet", 1680), "vae": ("vae", 248), "text_encoder": ("text_encoder", 197),
                           "text_encoder_2": ("text_encoder", 390)},
    }
    for name, components in expected.items():
        layout = _layout(layouts_dir, name)
        path = write_sparse_safetensors(layout, tmp_path / name.replace(".json", ".safetensors"))
        with open_asset(path) as asset:
            result = probe(asset)
        got = {n: (c.kind, c.tensors) for n, c in result.components.items()}
        assert got == components
        assert all(c.family == result.family for c in result.components.values())
        total = sum(c.parameters for c in result.components.values())
        assert total <= layout["stats"]["num_params"]


def test_sdxl_text_encoder_types(layouts_dir: Path, tmp_path: Path) -> None:
    path = write_sparse_safetensors(_layout(layouts_dir, "sdxl_base.json"), tmp_path / "sdxl.safetensors")
    with open_asset(path) as asset:
        result = probe(asset)
    assert result.components["text_encoder"].details["text_encoder"] == "clip-l"
    assert result.components["text_encoder_2"].details["text_encoder"] == "openclip-bigg"
    assert result.details["adm_in_channels"] == 2816
    # Nothing in the file states it: null, with the family's usual objective as a detail.
    assert result.prediction_type is None
    assert result.details["usual_prediction_type"] == "epsilon"


def test_lora_rank_and_targets(layouts_dir: Path, tmp_path: Path) -> None:
    path = write_sparse_safetensors(_layout(layouts_dir, "lora_sd15_kohya.json"), tmp_path / "lora.safetensors")
    with open_asset(path) as asset:
        result = probe(asset)
    assert result.details["rank"] == 4
    assert result.details["targets"] == ["text_encoder", "unet"]
    assert result.details["modules"] == 264
    # The sparse file is zero-filled, so every .alpha scalar reads as 0.0: read, not made up.
    assert result.details["alpha"] == 0.0
    assert result.details["alpha_source"] == "tensors"


def test_controlnet_conditioning(layouts_dir: Path, tmp_path: Path) -> None:
    path = write_sparse_safetensors(_layout(layouts_dir, "controlnet_sd15.json"), tmp_path / "cn.safetensors")
    with open_asset(path) as asset:
        result = probe(asset)
    assert result.details["conditioning_channels"] == 3
    assert result.details["context_dim"] == 768


def test_vae_family_is_ambiguous_not_guessed(layouts_dir: Path, tmp_path: Path) -> None:
    path = write_sparse_safetensors(_layout(layouts_dir, "vae_sd.json"), tmp_path / "vae.safetensors")
    with open_asset(path) as asset:
        result = probe(asset)
    assert result.kind == "vae" and result.family is None
    vae_families = {c.family for c in result.candidates if c.kind == "vae"}
    assert {"sd1", "sd2", "sdxl"} <= vae_families
    assert "family-ambiguous" in {f.code for f in result.findings}


def test_vae_family_from_modelspec(layouts_dir: Path, tmp_path: Path) -> None:
    meta = {"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"}
    path = write_sparse_safetensors(_layout(layouts_dir, "vae_sd.json"), tmp_path / "vae.safetensors", meta)
    with open_asset(path) as asset:
        result = probe(asset)
    assert (result.kind, result.family) == ("vae", "sdxl")
    assert any("modelspec.architecture" in line for line in result.evidence)
    assert not result.findings


def test_sd21_prediction_unknown_without_metadata(layouts_dir: Path, tmp_path: Path) -> None:
    path = write_sparse_safetensors(_layout(layouts_dir, "sd21_768v.json"), tmp_path / "sd21.safetensors")
    with open_asset(path) as asset:
        result = probe(asset)
    assert result.family == "sd2"
    assert result.prediction_type is None
    assert any("prediction type unknown" in line for line in result.evidence)


@pytest.mark.parametrize("metadata", [
    {"modelspec.architecture": "stable-diffusion-v2-768-v", "modelspec.prediction_type": "v"},
    {"modelspec.architecture": "stable-diffusion-v2-768-v"},
    {"modelspec.prediction_type": "v_prediction"},
    {"v_prediction": "true"},
])
def test_sd21_prediction_from_metadata(layouts_dir: Path, tmp_path: Path, metadata: dict[str, str]) -> None:
    path = write_sparse_safetensors(_layout(layouts_dir, "sd21_768v.json"), tmp_path / "sd21.safetensors", metadata)
    with open_asset(path) as asset:
        result = probe(asset)
    assert (result.family, result.prediction_type) == ("sd2", "v_prediction")
    assert any("prediction type v_prediction from metadata" in line for line in result.evidence)
    assert not result.findings


def test_sd21_epsilon_from_modelspec(layouts_dir: Path, tmp_path: Path) -> None:
    meta = {"modelspec.architecture": "stable-diffusion-v2-512", "modelspec.prediction_type": "epsilon"}
    path = write_sparse_safetensors(_layout(layouts_dir, "sd21_768v.json"), tmp_path / "sd21.safetensors", meta)
    with open_asset(path) as asset:
        assert probe(asset).prediction_type == "epsilon"


def test_contradicting_metadata_is_a_finding_and_tensors_win(layouts_dir: Path, tmp_path: Path) -> None:
    meta = {"modelspec.architecture": "stable-diffusion-xl-v1-base", "modelspec.title": "not really sdxl"}
    path = write_sparse_safetensors(_layout(layouts_dir, "sd21_768v.json"), tmp_path / "sd21.safetensors", meta)
    with open_asset(path) as asset:
        result = probe(asset)
    assert result.family == "sd2"
    contradictions = [f for f in result.findings if f.code == "metadata-contradiction"]
    assert len(contradictions) == 1
    assert contradictions[0].severity == "warning"
    assert "sdxl" in contradictions[0].message and "sd2" in contradictions[0].message


def test_kohya_metadata_contradiction_on_lora(layouts_dir: Path, tmp_path: Path) -> None:
    meta = {"ss_base_model_version": "sdxl_base_v1-0", "ss_network_dim": "16", "ss_network_alpha": "8",
            "ss_network_module": "networks.lora"}
    path = write_sparse_safetensors(_layout(layouts_dir, "lora_sd15_kohya.json"), tmp_path / "l.safetensors", meta)
    with open_asset(path) as asset:
        result = probe(asset)
    assert (result.kind, result.family, result.layout) == ("lora", "sd1", "kohya")
    messages = " | ".join(f.message for f in result.findings if f.code == "metadata-contradiction")
    assert "sdxl" in messages and "rank 16" in messages and "alpha 8" in messages


def test_kohya_metadata_agreeing(layouts_dir: Path, tmp_path: Path) -> None:
    meta = {"ss_base_model_version": "sd_v1", "ss_network_dim": "4", "ss_network_module": "networks.lora"}
    path = write_sparse_safetensors(_layout(layouts_dir, "lora_sd15_kohya.json"), tmp_path / "l.safetensors", meta)
    with open_asset(path) as asset:
        result = probe(asset)
    assert result.family == "sd1" and not result.findings
    assert any("ss_base_model_version" in line for line in result.evidence)


def test_sdxl_inpaint_metadata_contradicts_plain_unet(layouts_dir: Path, tmp_path: Path) -> None:
    meta = {"modelspec.architecture": "stable-diffusion-xl-v1-base/inpaint"}
    path = write_sparse_safetensors(_layout(layouts_dir, "sdxl_base.json"), tmp_path / "x.safetensors", meta)
    with open_asset(path) as asset:
        result = probe(asset)
    assert result.variant is None
    assert [f.code for f in result.findings] == ["metadata-contradiction"]
