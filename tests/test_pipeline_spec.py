"""Pipeline specs: parsing, line-numbered errors, round trips; the light half imports no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from assetkit.pipeline import PipelineSpec, SpecError, parse_spec
from assetkit.pipeline.spec import spec_from_dict

FULL = """\
base: models/sd15
vae: vae-ft-mse
loras:
  - {name: detail.safetensors, scale: 0.7}
  - style
controlnets:
  - {name: canny, conditioning_scale: 0.5, image: edges.png}
textual_inversions:
  - {name: ti.pt, token: "<cat>"}
scheduler: {class: EulerDiscreteScheduler, timestep_spacing: trailing}
dtype: fp16
device: cpu
smoke: {prompt: a cat, steps: 2, height: 64, width: 96, seed: 7, guidance_scale: 4}
"""


def test_full_spec_parses_and_round_trips() -> None:
    spec = parse_spec(FULL)
    assert spec.base == "models/sd15" and spec.vae == "vae-ft-mse"
    assert [(a.name, a.scale) for a in spec.loras] == [("detail.safetensors", 0.7), ("style", 1.0)]
    assert spec.controlnets[0].scale == 0.5 and spec.controlnets[0].image == "edges.png"
    assert spec.textual_inversions[0].token == "<cat>"
    assert spec.scheduler == {"class": "EulerDiscreteScheduler", "timestep_spacing": "trailing"}
    assert (spec.smoke.steps, spec.smoke.width, spec.smoke.seed, spec.smoke.guidance_scale) == (2, 96, 7, 4.0)
    assert [r for r, _ in spec.components()] == ["base", "vae", "lora[0]", "lora[1]", "controlnet[0]",
                                                 "textual_inversion[0]"]
    again = spec_from_dict(spec.to_dict())
    assert again.to_dict() == spec.to_dict()


@pytest.mark.parametrize(("text", "line", "words"), [
    ("base: x\nloras:\n  - name: a\n    strength: 1\n", 4, "unknown key 'strength' in loras[0]"),
    ("base: x\nfoo: 1\n", 2, "unknown key 'foo'"),
    ("base: x\nsmoke:\n  steps: two\n", 3, "smoke.steps must be an integer"),
    ("base: x\nsmoke:\n  width: 100\n", 3, "multiple of 8"),
    ("base: x\nloras:\n  - {name: a, scale: yes}\n", 3, "scale must be a number"),
    ("base: [1, 2]\n", 1, "base must be a string"),
    ("base: x\ndtype: fp64\n", 2, "dtype must be one of"),
    ("base: x\nloras: {name: a}\n", 2, "loras must be a list"),
    ("vae: x\n", 1, "needs a base"),
    ("base: x\nloras: [\n", 3, "not valid YAML"),
    ("base: x\nscheduler: {timestep_spacing: trailing}\n", 2, "scheduler needs a class"),
    ("base:\n", 1, "base must be a string, not None"),
    ('base: ""\n', 1, "base must not be empty"),
    ("base: x\nloras:\n  - {name: ' '}\n", 3, "loras[0] name must not be empty"),
    ("base: x\nsmoke: {guidance_scale: .nan}\n", 2, "smoke.guidance_scale must be a finite number"),
    ("base: x\nloras:\n  - {name: a, scale: .inf}\n", 3, "loras[0] scale must be a finite number"),
])
def test_bad_specs_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, where="pipe.yaml")
    assert str(info.value).startswith(f"pipe.yaml:{line}: "), str(info.value)
    assert words in str(info.value)


def test_empty_values_read_as_yaml_reads_them() -> None:
    spec = parse_spec("base: x\nscheduler: {class: EulerDiscreteScheduler, timestep_spacing:}\n"
                      "smoke: {negative_prompt: ''}\n")
    assert spec.scheduler == {"class": "EulerDiscreteScheduler", "timestep_spacing": None}
    assert spec.smoke.negative_prompt == ""


def test_defaults() -> None:
    spec = parse_spec("base: x\n")
    assert isinstance(spec, PipelineSpec)
    assert (spec.dtype, spec.device, spec.task, spec.smoke.steps) == ("auto", "auto", None, 4)


def test_cli_bad_spec_is_one_line_exit_2(tmp_path) -> None:
    from click.testing import CliRunner

    from assetkit.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("base: x\nlora: []\n")
    result = CliRunner().invoke(main, ["lock", str(spec)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"assetkit: error: {spec}:2: unknown key 'lora' in the spec "
                                                  "(allowed: base, vae, loras, controlnets, textual_inversions, "
                                                  "ip_adapter, scheduler, dtype, device, task, smoke)"]


def test_light_half_imports_no_torch() -> None:
    code = ("import sys, assetkit.pipeline, assetkit.cli.lock_cmd, assetkit.cli.check_cmd, assetkit.cli.smoke_cmd;"
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
