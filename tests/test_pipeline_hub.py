"""Hugging Face Hub ids in specs: refused unless asked (``--hub``), then resolved through
huggingface_hub itself from a real cache layout (blobs + snapshot links, refs/main), offline as
every test runs; a lock pins the commit and finds it again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from _pipeline_helpers import tiny_assets, write_spec  # noqa: F401 - fixture
from click.testing import CliRunner

from assetkit.cli import main
from assetkit.pipeline.hub import HubRef, parse_hub_id

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def _cache_repo(cache: Path, repo_id: str, source: Path, commit: str = COMMIT) -> Path:
    """Put ``source`` (a folder, or one file) into ``cache`` as huggingface_hub lays a download out."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for f in files:
        rel = Path(f.name) if source.is_file() else f.relative_to(source)
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, tiny_assets, monkeypatch) -> Path:  # noqa: F811
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    _cache_repo(cache, "assetkit-test/tiny-sd1", tiny_assets["sd1"])
    _cache_repo(cache, "assetkit-test/tiny-lora", tiny_assets["lora_sd1.safetensors"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_ids_are_told_from_paths() -> None:
    assert parse_hub_id("stabilityai/stable-diffusion-xl-base-1.0") == HubRef("stabilityai/stable-diffusion-xl-base-1.0")
    assert parse_hub_id("hf://org/repo@v1.0/unet/model.safetensors") == HubRef("org/repo", "v1.0",
                                                                               "unet/model.safetensors")
    assert parse_hub_id("hf://org/repo") == HubRef("org/repo")
    for path in ("loras/detail.safetensors", "a/b/c", "../x", "org/re--po", "sd15", "hf://org", "hf://org/../x"):
        assert parse_hub_id(path) is None, path


def test_hub_id_is_refused_unless_asked(hub_cache: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "base: assetkit-test/tiny-sd1\n")
    result = _cli("lock", str(spec))
    assert result.exit_code == 2
    assert result.output.strip() == (f"assetkit: error: {spec}:1: base 'assetkit-test/tiny-sd1': no such file or "
                                     f"directory {tmp_path / 'assetkit-test/tiny-sd1'}; a Hugging Face Hub id? pass "
                                     "--hub to resolve it")
    assert not spec.with_suffix(".lock").exists()
    explicit = write_spec(tmp_path, "base: hf://assetkit-test/tiny-sd1\n", "explicit.yaml")
    result = _cli("lock", str(explicit))
    assert result.exit_code == 2 and "resolved only when asked: pass --hub" in result.output


def test_lock_with_hub_pins_the_commit_and_check_finds_it_again(hub_cache: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "base: assetkit-test/tiny-sd1\n"
                                "loras: [{name: hf://assetkit-test/tiny-lora/lora_sd1.safetensors, scale: 0.7}]\n")
    result = _cli("lock", str(spec), "--hub", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(spec.with_suffix(".lock").read_text())
    base, lora = doc["components"]
    assert base["hub"] == {"repo_id": "assetkit-test/tiny-sd1", "revision": COMMIT, "filename": None}
    assert lora["hub"] == {"repo_id": "assetkit-test/tiny-lora", "revision": COMMIT,
                           "filename": "lora_sd1.safetensors"}
    assert lora["files"][0]["sha256"] == hashlib.sha256((hub_cache / "models--assetkit-test--tiny-lora" / "snapshots"
                                                        / COMMIT / "lora_sd1.safetensors").read_bytes()).hexdigest()
    assert any(f["path"] == "unet/diffusion_pytorch_model.safetensors" for f in base["files"])

    # the lock moves to another machine: its stored paths are gone, the cache holds the pinned commit
    doc["components"][0]["path"] = doc["components"][1]["path"] = "gone/elsewhere"
    moved = tmp_path / "moved.lock"
    moved.write_text(json.dumps(doc))
    result = _cli("check", str(moved), "--no-smoke", "--json")
    report = json.loads(result.output)
    assert result.exit_code == 0, report
    assert report["compatibility"]["components"]["lora[0]"]["coverage"]["unet"]["matched"] > 0


def test_a_changed_hub_file_is_refused_by_the_lock(hub_cache: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "base: assetkit-test/tiny-sd1\n")
    assert _cli("lock", str(spec), "--hub").exit_code == 0
    blob = next((hub_cache / "models--assetkit-test--tiny-sd1" / "blobs").iterdir())
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    result = _cli("check", str(spec.with_suffix(".lock")), "--no-smoke")
    assert result.exit_code == 1 and "lock-changed" in result.output


def test_hub_id_missing_from_the_cache_offline_is_one_line(hub_cache: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "base: assetkit-test/not-cached\n")
    result = _cli("lock", str(spec), "--hub")
    assert result.exit_code == 2
    assert ("hf://assetkit-test/not-cached is not in the local Hugging Face cache, and HF_HUB_OFFLINE is set: "
            "nothing is downloaded") in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
