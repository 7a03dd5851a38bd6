"""A single-file base whose shapes do not fit the catalogue's configs: its own configs from the spec
(``base: {name, config}``) or ``assetkit smoke --config DIR``, pinned by the lock, passed to the
conversion, and part of the assembled cache's key; the hint names what works where it is shown."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from assetkit.cli import main


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``sd1.safetensors`` (a tiny SD1 pipeline as one original-layout file: shapes the
    catalogue's sd1 configs do not have), ``cfg/`` (that pipeline's configs, no weights) and ``sd1/``."""
    from assetkit.factory.diffusers_models import save_tiny_sd1_pipeline

    root = tmp_path_factory.mktemp("single-file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_tiny_sd1_pipeline(root / "sd1")
    result = _cli("convert", str(root / "sd1"), str(root / "sd1.safetensors"), "--to", "single-file")
    assert result.exit_code == 0, result.output
    shutil.copytree(root / "sd1", root / "cfg", ignore=shutil.ignore_patterns("*.safetensors"))
    return root


@pytest.fixture()
def work(single: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    dest = tmp_path / "work"
    shutil.copytree(single, dest)
    monkeypatch.setenv("ASSETKIT_HOME", str(tmp_path / "home"))
    return dest


def _findings(result, suite: str) -> list[dict]:
    return json.loads(result.output)["suites"][suite]["findings"]


def test_smoke_of_a_file_that_does_not_fit_the_catalogue_passes_with_its_configs(work: Path, tmp_path: Path) -> None:
    result = _cli("smoke", str(work / "sd1.safetensors"), "--steps", "1", "--json")
    assert result.exit_code == 1, result.output
    (failed,) = [f for f in _findings(result, "smoke") if f["code"] == "assemble-failed"]
    assert "(pass --config DIR with its own)" in failed["message"]  # smoke has --config: the hint works here
    result = _cli("smoke", str(work / "sd1.safetensors"), "--steps", "1", "--config", str(work / "cfg"), "--json")
    assert result.exit_code == 0, result.output
    assembled = sorted(p.name for p in (tmp_path / "home" / "assembled").iterdir())
    assert len(assembled) == 1 and "-" in assembled[0]  # <file sha256>-<configs sha256>
    # --config with a folder base: one line, exit 2
    result = _cli("smoke", str(work / "sd1"), "--config", str(work / "cfg"))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "configs are for a single-file base" in result.output


def test_the_spec_gives_the_base_its_configs_and_the_lock_pins_them(work: Path, tmp_path: Path) -> None:
    (work / "plain.yaml").write_text("base: sd1.safetensors\nsmoke: {steps: 1}\n")
    result = _cli("check", str(work / "plain.yaml"), "--json")
    assert result.exit_code == 1
    (failed,) = [f for f in _findings(result, "smoke") if f["code"] == "assemble-failed"]
    assert "base: {name: FILE, config: DIR}" in failed["message"] and "--config" not in failed["message"]

    (work / "spec.yaml").write_text("base: {name: sd1.safetensors, config: cfg}\nsmoke: {steps: 1}\n")
    assert _cli("lock", str(work / "spec.yaml")).exit_code == 0
    doc = json.loads((work / "spec.lock").read_text())
    assert doc["spec"]["base"] == {"name": "sd1.safetensors", "config": "cfg"}
    pinned = {c["role"]: c for c in doc["components"]}["base_config"]
    assert pinned["path"] == "cfg" and "unet/config.json" in {f["path"] for f in pinned["files"]}
    result = _cli("check", str(work / "spec.lock"), "--json")
    assert result.exit_code == 0, result.output
    first = {p.name for p in (tmp_path / "home" / "assembled").iterdir()}

    # An edited config: the lock refuses it, and a check of the spec converts again (a new cache key).
    sched = work / "cfg" / "scheduler" / "scheduler_config.json"
    sched.write_text(json.dumps({**json.loads(sched.read_text()), "timestep_spacing": "trailing"}))
    result = _cli("check", str(work / "spec.lock"), "--no-smoke", "--json")
    assert result.exit_code == 1
    assert [(f["code"], f["where"]) for f in _findings(result, "lock")] == [("lock-changed", "base_config cfg")]
    assert _cli("check", str(work / "spec.yaml"), "--json").exit_code == 0
    second = {p.name for p in (tmp_path / "home" / "assembled").iterdir()}
    assert len(second - first) == 1 and {n.split("-")[0] for n in second} == {n.split("-")[0] for n in first}


@pytest.mark.parametrize(("text", "words"), [
    ("base: {name: sd1.safetensors, config: nope}\n", "spec.yaml:1: base config 'nope': no such folder"),
    ("base: {name: sd1, config: cfg}\n", "spec.yaml:1: base config 'cfg': configs are for a single-file base"),
    ("base: {name: sd1.safetensors,\n       configs: cfg}\n", "spec.yaml:2: unknown key 'configs' in base"),
])
def test_bad_base_configs_are_one_line_naming_the_spec_line(work: Path, text: str, words: str) -> None:
    (work / "spec.yaml").write_text(text)
    result = _cli("lock", str(work / "spec.yaml"))
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert words in result.output.replace(str(work) + "/", "")
