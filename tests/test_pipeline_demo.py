"""``assetkit demo``: the README's main job on a machine with no models."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner


@pytest.mark.slow
def test_demo_runs_the_pipeline_job_and_its_commands_work_as_printed(tmp_path: Path, monkeypatch) -> None:
    from assetkit.cli import main

    monkeypatch.delenv("ASSETKIT_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["demo", "demo", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    job = doc["pipeline"]
    assert doc["ok"] and job["ok"]
    assert Path(job["registry"]).resolve() == (tmp_path / "demo" / "registry").resolve()  # never the user's
    assert {r["kind"] for r in job["registered"].values()} == {"pipeline", "lora", "controlnet"}
    assert Path(job["converted"]["to"]).is_file() and Path(job["report"]["html"]).is_file()
    suites = job["check"]["suites"]
    assert set(suites) == {"lock", "validate", "compatibility", "smoke"} and all(s["ok"] for s in suites.values())
    # the tokenizer is the real CLIP one (the ids of the CONTEXT oracle sentence)
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(tmp_path / "demo" / "pipeline-assets" / "sd15-tiny-diffusers" / "tokenizer"))
    assert tok("a photograph of an astronaut riding a horse").input_ids == [
        49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    # the printed commands run as printed from the same folder (here the first and the lock check)
    for line in (doc["next"][0], next(c for c in doc["next"] if "pipeline.lock" in c)):
        argv = shlex.split(line)
        env = {}
        if argv[0].startswith("ASSETKIT_HOME="):
            env["ASSETKIT_HOME"] = argv.pop(0).split("=", 1)[1]
        program = argv[0]
        assert program == "assetkit" or Path(program).name == "assetkit"
        if program == "assetkit":
            argv[0] = str(Path(sys.executable).parent / "assetkit")
        run = subprocess.run(argv, capture_output=True, text=True, env={**__import__("os").environ, **env,
                                                                         "HF_HUB_OFFLINE": "1"})
        assert run.returncode == 0, (line, run.stdout[-500:], run.stderr[-500:])
