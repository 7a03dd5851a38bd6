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
    # numeric limits: one table (spec.LIMITS), the same as assetkit smoke's --steps and --size
    ("base: x\nsmoke: {height: 100000, width: 100000}\n", 2, "smoke.height must be between 8 and 4096, not 100000"),
    ("base: x\nsmoke:\n  width: 4104\n", 3, "smoke.width must be between 8 and 4096"),
    ("base: x\nsmoke: {steps: 5000}\n", 2, "smoke.steps must be between 1 and 1000"),
    ("base: x\nsmoke: {steps: 0}\n", 2, "smoke.steps must be between 1 and 1000, not 0"),
    ("base: x\nsmoke: {seed: -1}\n", 2, "smoke.seed must be between 0 and 2**64 - 1"),
    ("base: x\nsmoke: {seed: 18446744073709551616}\n", 2, "smoke.seed must be between 0 and 2**64 - 1"),
    ("base: x\nsmoke: {guidance_scale: -5}\n", 2, "smoke.guidance_scale must be between 0 and 100"),
    ("base: x\nloras:\n  - {name: a, scale: 1000000.0}\n", 3, "loras[0] scale must be between -100 and 100"),
    ("base: x\ncontrolnets:\n  - {name: a, conditioning_scale: 500}\n", 3, "conditioning_scale must be between"),
    ("base: x\nip_adapter: {name: a, scale: -1000}\n", 2, "ip_adapter scale must be between"),
    # the base with its own configs
    ("base: {config: c}\n", 1, "base needs a name"),
    ("base:\n  name: x.safetensors\n  conf: c\n", 3, "unknown key 'conf' in base (allowed: name, config)"),
    ("base: {name: x.safetensors, config: ''}\n", 1, "base config must not be empty"),
])
def test_bad_specs_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, where="pipe.yaml")
    assert str(info.value).startswith(f"pipe.yaml:{line}: "), str(info.value)
    assert words in str(info.value)


def test_the_largest_allowed_values_parse() -> None:
    spec = parse_spec("base: x\nsmoke: {height: 4096, width: 8, steps: 1000, seed: 18446744073709551615}\n")
    assert (spec.smoke.height, spec.smoke.width, spec.smoke.steps) == (4096, 8, 1000)


def test_a_base_with_its_own_configs_is_a_component_and_round_trips() -> None:
    spec = parse_spec("vae: v\nbase:\n  name: model.safetensors\n  config: configs/model\n", where="pipe.yaml")
    assert (spec.base, spec.base_config) == ("model.safetensors", "configs/model")
    assert spec.components() == [("base", "model.safetensors"), ("base_config", "configs/model"), ("vae", "v")]
    assert (spec.where("base"), spec.where("base_config"), spec.where("vae")) == ("pipe.yaml:3", "pipe.yaml:4",
                                                                                   "pipe.yaml:1")
    assert spec.to_dict()["base"] == {"name": "model.safetensors", "config": "configs/model"}
    assert spec_from_dict(spec.to_dict()) == spec
    assert parse_spec("base: x\n").to_dict()["base"] == "x"  # a plain base stays a string (old locks read alike)


@pytest.mark.parametrize(("text", "line", "words"), [
    ("base: nosuchthing\n", 1, "base 'nosuchthing': neither a path (no {root}/nosuchthing) nor an asset of the "
                              "registry at {home} (no asset named or hashed 'nosuchthing')"),
    ("base: org/name\n", 1, "base 'org/name': no such file or directory {root}/org/name; a Hugging Face Hub id? "
                           "pass --hub to resolve it"),
    ("base: {root}/sd\nloras:\n  - {{name: detail}}\n  - {{name: more.safetensors, scale: 0.5}}\n", 4,
     "lora[1] 'more.safetensors': no such file or directory {root}/more.safetensors"),
])
@pytest.mark.parametrize("command", ["lock", "check"])
def test_a_name_that_resolves_to_nothing_names_the_spec_line_and_what_was_tried(
        tmp_path, monkeypatch, command: str, text: str, line: int, words: str) -> None:
    from click.testing import CliRunner

    from assetkit.cli import main
    from assetkit.registry import Registry

    monkeypatch.setenv("ASSETKIT_HOME", str(tmp_path / "home"))
    (tmp_path / "sd").mkdir()
    (tmp_path / "detail").write_bytes(b"")  # a path: found before the registry is asked
    spec = tmp_path / "s.yaml"
    spec.write_text(text.format(root=tmp_path))
    with Registry():
        pass
    result = CliRunner().invoke(main, [command, str(spec)])
    assert result.exit_code == 2
    expected = f"assetkit: error: {spec}:{line}: " + words.format(root=tmp_path, home=tmp_path / "home")
    assert result.output.strip().splitlines() == [expected]


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


@pytest.mark.parametrize(("args", "message"), [
    (["--size", "65"], "--size must be a multiple of 8, not 65"),
    (["--size", "100000"], "--size must be between 8 and 4096, not 100000"),
    (["--steps", "0"], "--steps must be between 1 and 1000, not 0"),
])
def test_smoke_limits_are_the_specs_and_one_line(args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from assetkit.cli import main

    result = CliRunner().invoke(main, ["smoke", "x", *args])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"assetkit: error: {message}"]
