"""``assetkit validate``: exit codes, text and JSON output, JUnit reports, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from _tiny_diffusers import copy_folder, rewrite_safetensors, saved_pipelines
from click.testing import CliRunner
from safetensors.numpy import save_file

from assetkit.cli import main

UNET_FILE = Path("unet") / "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    return saved_pipelines()


@pytest.fixture
def broken(folders, tmp_path) -> Path:
    """A pipeline whose UNet lost a tensor."""
    root = copy_folder(folders["plain"], tmp_path / "broken")
    rewrite_safetensors(root / UNET_FILE, drop=("conv_in.weight",))
    return root


def run(*args: str):
    return CliRunner().invoke(main, ["validate", *args])


def test_valid_folder_exit_0(folders):
    result = run(str(folders["plain"]))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"OK    {folders['plain']}")


def test_problems_exit_1_with_findings(broken):
    result = run(str(broken))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"FAIL  {broken}: 1 problem"
    assert "config-missing-weight" in lines[1] and "conv_in.weight" in lines[1]


def test_json_single_path(broken):
    result = run("--json", str(broken))
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["path"] == str(broken) and document["ok"] is False
    assert document["problems"] == [{
        "code": "config-missing-weight", "severity": "error", "where": "unet/diffusion_pytorch_model.safetensors",
        "message": document["problems"][0]["message"],
    }]
    assert "conv_in.weight" in document["problems"][0]["message"]


def test_json_several_paths(folders, broken):
    result = run("--json", str(folders["plain"]), str(broken))
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert [r["ok"] for r in document["results"]] == [True, False]
    assert [r["path"] for r in document["results"]] == [str(folders["plain"]), str(broken)]


def test_junit_report(folders, broken, tmp_path):
    report = tmp_path / "out" / "validate.xml"
    report.parent.mkdir()
    result = run("--junit", str(report), str(folders["plain"]), str(broken))
    assert result.exit_code == 1
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite.get("name") == "assetkit validate" and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert cases[str(folders["plain"])].find("failure") is None
    failure = cases[str(broken)].find("failure")
    assert failure is not None and "config-missing-weight" in failure.text


def test_numerics_and_variant_options(tmp_path, folders):
    path = tmp_path / "nan.safetensors"
    save_file({"w": np.array([np.nan, 1.0], np.float32)}, str(path))
    assert run(str(path)).exit_code == 0
    result = run("--numerics", "--json", str(path))
    assert result.exit_code == 1
    assert [p["code"] for p in json.loads(result.stdout)["problems"]] == ["numerics-nan"]
    assert run("--variant", "fp16", str(folders["fp16"])).exit_code == 0
    missing = run("--variant", "bf16", "--json", str(folders["fp16"]))
    assert missing.exit_code == 1
    assert {p["code"] for p in json.loads(missing.stdout)["problems"]} == {"variant-missing"}


def test_unreadable_single_path_is_one_line_exit_2(tmp_path, folders):
    result = run(str(tmp_path / "missing.safetensors"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "no such file or directory" in result.stderr
    root = copy_folder(folders["plain"], tmp_path / "p")
    (root / "model_index.json").write_text("{oops")
    result = run("--json", str(root))
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["ok"] is False and "model_index.json: broken JSON" in document["error"]


def test_unreadable_among_several_paths(tmp_path, folders):
    png = tmp_path / "image.safetensors.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    result = run("--json", str(folders["plain"]), str(png))
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["results"][0]["ok"] is True
    assert "PNG image" in document["results"][1]["error"]


def test_usage_error_exit_2():
    assert run().exit_code == 2


def test_whole_process_no_traceback(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    process = subprocess.run([sys.executable, "-m", "assetkit.cli", "validate", str(empty)],
                             capture_output=True, text=True)
    assert process.returncode == 2
    assert process.stdout == ""
    assert process.stderr.strip() == f"assetkit: error: {empty}: empty folder: no model_index.json, config.json or weights"
