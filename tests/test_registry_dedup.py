"""Components are the unit of sharing: the same VAE from any container is one blob; pipelines
load from the registry with diffusers' own loader."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _registry_helpers import pipeline_copy, sd15_trio, sha256_of, tiny_pipeline  # noqa: F401
from safetensors.numpy import load_file, save_file

from assetkit import Registry
from assetkit.errors import AssetkitError


def _canonical(reg: Registry, name: str) -> str:
    return reg.resolve(name).canonical_sha256


def test_same_vae_from_three_containers_is_one_blob(tmp_path: Path, sd15_trio: dict[str, Path]) -> None:  # noqa: F811
    reg = Registry(tmp_path / "reg")
    full = reg.add(sd15_trio["checkpoint"], name="full", config=sd15_trio["config"]).record
    standalone = reg.add(sd15_trio["standalone_vae"], name="vae", config=sd15_trio["config"]).record
    folder = reg.add(sd15_trio["folder"], name="folder").record
    assert full.storage == "components" and set(full.components) >= {"unet", "vae", "text_encoder"}
    vae_blobs = {_canonical(reg, full.components["vae"]), _canonical(reg, standalone.components["vae"]),
                 _canonical(reg, folder.components["vae"])}
    assert len(vae_blobs) == 1
    (blob,) = vae_blobs
    assert sum(1 for _ in reg.store.iter_blobs() if _ == blob) == 1
    # the shared blob holds the VAE's tensors, in diffusers names, equal to the diffusers folder's file
    ours = load_file(reg.store.path(blob))
    theirs = load_file(sd15_trio["folder"] / "vae" / "diffusion_pytorch_model.safetensors")
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    # split the same way (same configs), the standalone file even reuses the checkpoint's
    # VAE component asset; the diffusers folder's vae/ (its own config.json) is another asset, same blob
    assert standalone.components["vae"] == full.components["vae"]
    shares = {s["asset"] for s in reg.show("vae")["shares"]}
    assert {"full", folder.components["vae"]} <= shares
    report = reg.du()
    assert report.saved_bytes > 0 and report.disk_bytes < report.added_bytes
    # every container still comes back byte for byte
    for name, src in (("full", sd15_trio["checkpoint"]), ("vae", sd15_trio["standalone_vae"])):
        out = reg.export(name, tmp_path / f"{name}.safetensors", form="file")
        assert sha256_of(Path(out["path"])) == sha256_of(src)
    out = Path(reg.export("folder", tmp_path / "folder-out", form="diffusers")["path"])
    for f in sd15_trio["folder"].rglob("*"):
        if f.is_file():
            assert sha256_of(out / f.relative_to(sd15_trio["folder"])) == sha256_of(f), f
    assert reg.verify().ok


def test_dtype_invariant_fingerprint_says_same_weights_other_precision(tmp_path: Path,
                                                                       sd15_trio: dict[str, Path]) -> None:  # noqa: F811
    tensors = load_file(sd15_trio["standalone_vae"])
    fp32 = tmp_path / "vae32.safetensors"
    fp16 = tmp_path / "vae16.safetensors"
    save_file({k: v.astype(np.float32) for k, v in tensors.items()}, fp32)
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, fp16)
    other = tmp_path / "other.safetensors"
    save_file({k: (v + 1).astype(np.float16) for k, v in tensors.items()}, other)
    reg = Registry(tmp_path / "reg")
    for p in (fp32, fp16, other):
        reg.add(p)
    assert _canonical(reg, "vae32") != _canonical(reg, "vae16")
    same = reg.show("vae16")["same_weights"]
    assert [s["asset"] for s in same] == ["vae32"] and same[0]["dtypes"] == ["F32"]
    assert "stored in F32 there" in same[0]["note"]
    assert all(s["asset"] not in ("other", "other.vae") for s in reg.show("vae32")["same_weights"])


def test_diffusers_pipeline_is_stored_as_components_shared_across_pipelines(tmp_path: Path,
                                                                             tiny_pipeline: Path) -> None:  # noqa: F811
    reg = Registry(tmp_path / "reg")
    first = reg.add(tiny_pipeline, name="one")
    assert first.record.kind == "pipeline" and first.record.storage == "components"
    assert set(first.record.components) == {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    blobs_after_one = set(reg.store.iter_blobs())
    # a second pipeline that differs only by its scheduler config
    second = tmp_path / "two"
    shutil.copytree(tiny_pipeline, second)
    config = second / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"steps_offset": 1', '"steps_offset": 0'))
    result = reg.add(second, name="two")
    assert set(result.components_reused) == {"unet", "vae", "text_encoder", "tokenizer"}
    new_blobs = set(reg.store.iter_blobs()) - blobs_after_one
    assert len(new_blobs) == 1  # the scheduler config, nothing else
    assert reg.show("one.vae")["used_by"] == ["one", "two"]
    with pytest.raises(AssetkitError, match="component of"):
        reg.rm("one.vae")
    assert reg.rm("two") == ["two", "two.scheduler"]
    assert reg.resolve("one.vae").name == "one.vae"


def test_pipeline_path_loads_with_diffusers_and_export_is_exact(tmp_path: Path, tiny_pipeline: Path) -> None:  # noqa: F811
    import torch
    from diffusers import StableDiffusionPipeline

    reg = Registry(tmp_path / "reg")
    reg.add(tiny_pipeline, name="pipe")
    view = reg.path("pipe")
    loaded = StableDiffusionPipeline.from_pretrained(view, local_files_only=True)
    original = StableDiffusionPipeline.from_pretrained(tiny_pipeline, local_files_only=True)
    for a, b in zip(loaded.unet.state_dict().values(), original.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    vae_view = reg.path("pipe.vae")
    assert (vae_view / "config.json").is_file()
    out = Path(reg.export("pipe", tmp_path / "exported", form="diffusers")["path"])
    for f in tiny_pipeline.rglob("*"):
        if f.is_file():
            assert sha256_of(out / f.relative_to(tiny_pipeline)) == sha256_of(f)


def test_checkpoint_the_converter_cannot_split_is_stored_whole(tmp_path: Path) -> None:
    from assetkit.factory import make_fixture

    src = make_fixture("sd3_medium", tmp_path / "in", "safetensors")  # no SD3 key map in the converter
    reg = Registry(tmp_path / "reg")
    record = reg.add(src).record
    assert record.kind == "pipeline" and record.storage == "whole"
    assert "stored whole" in reg.show(record.name)["note"]
    with pytest.raises(AssetkitError, match="no diffusers folder form"):
        reg.path(record.name, layout="diffusers")
    assert sha256_of(reg.path(record.name, layout="file")) == sha256_of(src)


def test_pipeline_exports_as_one_original_layout_file_through_the_converter(
        tmp_path: Path, sd15_trio: dict[str, Path]) -> None:  # noqa: F811
    from assetkit import open_asset
    from assetkit.probe import probe

    reg = Registry(tmp_path / "reg")
    reg.add(sd15_trio["folder"], name="pipe")
    out = Path(reg.export("pipe", tmp_path / "pipe.safetensors", form="single-file")["path"])
    with open_asset(out) as asset:
        result = probe(asset)
        assert (result.kind, result.layout) == ("pipeline", "original")
        assert any(n.startswith("first_stage_model.") for n in asset.tensors)
    back = reg.add(out, name="pipe-single", config=sd15_trio["config"]).record  # back in, split again
    assert back.storage == "components"
    assert _canonical(reg, back.components["vae"]) == _canonical(reg, "pipe.vae")
    assert _canonical(reg, back.components["unet"]) == _canonical(reg, "pipe.unet")


def test_standalone_vae_not_split_says_what_is_not_shared(tmp_path: Path, sd15_trio: dict[str, Path]) -> None:  # noqa: F811
    """Without --config the tiny original-layout VAE fits none of the catalogue's (full-size) configs:
    it is stored canonical, in original names, not shared with the pipeline's VAE, and add says so,
    as it does for a checkpoint stored whole."""
    reg = Registry(tmp_path / "reg")
    folder = reg.add(sd15_trio["folder"], name="folder").record
    result = reg.add(sd15_trio["standalone_vae"], name="vae")
    assert result.record.storage == "canonical" and not result.record.components
    assert result.record.canonical_sha256 != _canonical(reg, folder.components["vae"])  # really not shared
    (note,) = result.notes
    assert "not shared with the same vae inside a pipeline" in note and "--config DIR" in note
    assert reg.show("vae")["note"] == note
    whole = reg.add(sd15_trio["checkpoint"], name="full")
    assert whole.record.storage == "whole" and "--config DIR" in whole.notes[0]
    # with --config the same file is split and shared, and nothing is said
    reg2 = Registry(tmp_path / "reg2")
    reg2.add(sd15_trio["folder"], name="folder")
    split = reg2.add(sd15_trio["standalone_vae"], name="vae", config=sd15_trio["config"])
    assert split.record.components and split.notes == [] and "note" not in reg2.show("vae")
