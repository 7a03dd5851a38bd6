"""Shared builders for the registry tests: tiny real-layout assets on disk (no downloads)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

#: a pickle that would call os.system when loaded (it is only ever scanned)
EVIL_PICKLE = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03."


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD1 diffusers pipeline folder saved by diffusers itself (built once per session)."""
    from assetkit.factory.diffusers_models import save_tiny_sd1_pipeline

    return save_tiny_sd1_pipeline(tmp_path_factory.mktemp("pipe") / "tiny-sd1", seed=3)


@pytest.fixture()
def pipeline_copy(tiny_pipeline: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "tiny-sd1"
    shutil.copytree(tiny_pipeline, dest)
    return dest


@pytest.fixture(scope="session")
def sd15_trio(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same VAE in three containers: in the ``vae/`` folder of a diffusers pipeline (saved by
    diffusers), inside a full original-layout checkpoint that the converter wrote from that
    pipeline, and as a standalone original-layout file (other metadata, other key order).
    ``config`` is the folder whose configs split the tiny checkpoint (the catalogue's are full-size)."""
    from safetensors.numpy import load_file, save_file

    from assetkit import open_asset
    from assetkit.convert import plan_diffusers_to_single_file, write_single_file

    base = tmp_path_factory.mktemp("trio")
    checkpoint = base / "sd15-tiny.safetensors"
    with open_asset(tiny_pipeline) as asset:
        write_single_file(plan_diffusers_to_single_file(asset), asset, checkpoint)
    tensors = load_file(checkpoint)
    vae = {k[len("first_stage_model."):]: v for k, v in tensors.items() if k.startswith("first_stage_model.")}
    standalone = base / "vae-standalone.safetensors"
    save_file(dict(reversed(list(vae.items()))), standalone, metadata={"source": "standalone copy"})
    return {"checkpoint": checkpoint, "standalone_vae": standalone, "folder": tiny_pipeline, "config": tiny_pipeline}


def run(root: Path, *args: str, code: int = 0) -> dict | str:
    """``assetkit registry ARGS --root ROOT``: the JSON document with --json, else the output;
    the exit code must be ``code``."""
    from click.testing import CliRunner

    from assetkit.cli import main

    result = CliRunner().invoke(main, ["registry", *args, "--root", str(root)])
    assert result.exit_code == code, result.output
    if "--json" in args:
        return json.loads(result.stdout)
    return result.output
