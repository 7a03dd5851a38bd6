"""Compatibility before loading (headers only): the right error for every incompatible pair, on
diffusers folders, single files and adapter files; full-size layouts in milliseconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _pipeline_helpers import tiny_assets  # noqa: F401 - fixture

from assetkit.pipeline import parse_spec
from assetkit.pipeline.compat import UNET_SCHEDULER_OPTIONS, UNET_SCHEDULERS, compat_paths


def _check(text: str):
    return compat_paths(parse_spec(text))


def _codes(report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in report.findings:
        out.setdefault(f.code, []).append(f.message)
    return out


def test_matching_sd1_components_pass_with_full_coverage(tiny_assets) -> None:  # noqa: F811
    a = tiny_assets
    for lora in ("lora_sd1.safetensors", "lora_sd1_kohya.safetensors"):
        report = _check(f"base: {a['sd1']}\nloras: [{{name: {a[lora]}}}]\ncontrolnets: [{{name: {a['cn_sd1']}}}]\n")
        assert report.ok, report.findings
        # 8 attention projections x 4 attention blocks in the UNet, q/k/v/out in one text-encoder layer
        assert report.components["lora[0]"]["coverage"] == {"unet": {"matched": 32, "total": 32},
                                                            "text_encoder": {"matched": 4, "total": 4}}


def test_matching_sdxl_components_pass(tiny_assets) -> None:  # noqa: F811
    a = tiny_assets
    report = _check(f"base: {a['sdxl']}\nloras: [{{name: {a['lora_sdxl.safetensors']}}}]\n"
                    f"controlnets: [{{name: {a['cn_sdxl']}}}]\n")
    assert report.ok, report.findings
    cov = report.components["lora[0]"]["coverage"]["unet"]
    assert cov["matched"] == cov["total"] > 0


def test_sd1_lora_on_sdxl(tiny_assets) -> None:  # noqa: F811
    a = tiny_assets
    codes = _codes(_check(f"base: {a['sdxl']}\nloras: [{{name: {a['lora_sd1.safetensors']}}}]\n"))
    assert "family-mismatch" in codes
    assert any("input width 768 != base" in m for m in codes["lora-shape-mismatch"])


def test_lora_for_a_base_of_another_width(tiny_assets) -> None:  # noqa: F811
    a = tiny_assets
    report = _check(f"base: {a['sd1']}\nloras: [{{name: {a['lora_narrow.safetensors']}}}]\n")
    assert not report.ok
    messages = _codes(report)["lora-shape-mismatch"]
    # the narrow pipeline's attention takes 32-wide context; the base's attn2 takes 768
    assert any("input width 32 != base 768" in m for m in messages), messages


def test_sdxl_scaled_vae_on_sd1(tiny_assets) -> None:  # noqa: F811
    a = tiny_assets
    codes = _codes(_check(f"base: {a['sd1']}\nvae: {a['vae_sdxl']}\n"))
    assert list(codes) == ["vae-scaling-factor"]
    assert "0.13025" in codes["vae-scaling-factor"][0] and "0.18215" in codes["vae-scaling-factor"][0]


def test_16_channel_vae_on_4_channel_unet(tiny_assets) -> None:  # noqa: F811
    a = tiny_assets
    codes = _codes(_check(f"base: {a['sd1']}\nvae: {a['vae_16ch']}\n"))
    assert "a 16-channel VAE" in codes["vae-latent-channels"][0]


def test_fp16_sdxl_vae_warns(tiny_assets) -> None:  # noqa: F811
    a = tiny_assets
    report = _check(f"base: {a['sdxl']}\nvae: {a['vae_sdxl']}\ndtype: fp16\n")
    assert report.ok and "vae-fp16-sdxl" in _codes(report)


def test_controlnet_of_the_wrong_family(tiny_assets) -> None:  # noqa: F811
    a = tiny_assets
    codes = _codes(_check(f"base: {a['sd1']}\ncontrolnets: [{{name: {a['cn_sdxl']}}}]\n"))
    # the tiny SDXL ControlNet has no family the probe can name: the widths decide
    assert "family-unknown" in codes
    assert any(m.startswith("cross-attention width: ControlNet") for m in codes["controlnet-mismatch"])
    assert any(m.startswith("added-conditioning width") for m in codes["controlnet-mismatch"])


def test_v_prediction_base_with_epsilon_scheduler(tiny_assets) -> None:  # noqa: F811
    a = tiny_assets
    bad = _check(f"base: {a['sd1_vpred']}\nscheduler: {{class: EulerDiscreteScheduler, prediction_type: epsilon}}\n")
    assert "but the base is v_prediction (from scheduler/scheduler_config.json)" in \
        _codes(bad)["scheduler-prediction"][0]
    assert _check(f"base: {a['sd1_vpred']}\nscheduler: EulerDiscreteScheduler\n").ok


def test_scheduler_outside_the_compatible_list(tiny_assets) -> None:  # noqa: F811
    codes = _codes(_check(f"base: {tiny_assets['sd1']}\nscheduler: FlowMatchEulerDiscreteScheduler\n"))
    assert "scheduler-incompatible" in codes


def test_scheduler_list_is_diffusers_own() -> None:
    """registry/schedulers.json against the installed diffusers: the compatible classes, and the
    options each one's config takes (its __init__ parameters)."""
    import inspect

    import diffusers

    assert set(diffusers.PNDMScheduler._compatibles) == UNET_SCHEDULERS
    for name, options in UNET_SCHEDULER_OPTIONS.items():
        assert options == set(inspect.signature(getattr(diffusers, name).__init__).parameters) - {"self"}, name


def test_an_unknown_scheduler_option_is_found_before_loading(tiny_assets) -> None:  # noqa: F811
    """A typo'd override (timestep_spacin) is an error of the compatibility stage, headers only
    (it was found only by the smoke stage, so check --no-smoke passed it)."""
    report = _check(f"base: {tiny_assets['sd1']}\nscheduler: {{class: EulerDiscreteScheduler, timestep_spacin: trailing}}\n")
    found = [f for f in report.findings if f.code == "scheduler-unknown-key"]
    assert len(found) == 1 and "no option timestep_spacin; did you mean timestep_spacing?" in found[0].message
    assert not report.ok
    # a known option passes
    bare = _check(f"base: {tiny_assets['sd1']}\nscheduler: {{class: PNDMScheduler, steps_offset: 1}}\n")
    assert "scheduler-unknown-key" not in _codes(bare)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory) -> Path:
    from assetkit.factory import make_fixture

    folder = tmp_path_factory.mktemp("full-size")
    for fixture in ("sd15", "sdxl_base", "lora_sd15_kohya", "lora_sdxl_kohya", "controlnet_sd15", "vae_sd",
                    "sd21_768v_modelspec"):
        make_fixture(fixture, folder, "safetensors", full=True)  # sparse: shapes of the real releases
    return folder


def test_single_files_full_size(full_size: Path) -> None:
    d = full_size
    ok = _check(f"base: {d}/sdxl_base.safetensors\nloras: [{{name: {d}/lora_sdxl_kohya.safetensors}}]\n")
    assert ok.ok, ok.findings
    assert ok.components["lora[0]"]["coverage"]["unet"] == {"matched": 722, "total": 722}
    sd1 = _check(f"base: {d}/sd15.safetensors\nloras: [{{name: {d}/lora_sd15_kohya.safetensors}}]\n"
                 f"controlnets: [{{name: {d}/controlnet_sd15.safetensors}}]\nvae: {d}/vae_sd.safetensors\n")
    assert sd1.ok, sd1.findings
    assert sd1.components["lora[0]"]["coverage"]["text_encoder"] == {"matched": 72, "total": 72}
    # a kohya SD1 LoRA names UNet modules the diffusers way, the single file the ldm way: the
    # converter's key maps rename the base's modules, so every one is matched and shape-checked
    assert sd1.components["lora[0]"]["coverage"]["unet"] == {"matched": 192, "total": 192}
    assert "lora-coverage-unchecked" not in _codes(sd1)
    assert ok.components["lora[0]"]["coverage"]["text_encoder_2"] == {"matched": 192, "total": 192}
    bad = _codes(_check(f"base: {d}/sdxl_base.safetensors\ncontrolnets: [{{name: {d}/controlnet_sd15.safetensors}}]\n"))
    assert any("ControlNet 768" in m and "base 2048" in m for m in bad["controlnet-mismatch"])
    assert bad["family-mismatch"] == ["controlnet of family sd1 on a base of family sdxl"]
    vpred = _codes(_check(f"base: {d}/sd21_768v_modelspec.safetensors\n"
                          "scheduler: {class: DDIMScheduler, prediction_type: epsilon}\n"))
    assert "base is v_prediction (from the probe)" in vpred["scheduler-prediction"][0]


def test_compat_on_full_size_files_imports_no_torch(full_size: Path) -> None:
    code = (f"import sys; from assetkit.pipeline import parse_spec; from assetkit.pipeline.compat import compat_paths;"
            f"r = compat_paths(parse_spec('base: {full_size}/sdxl_base.safetensors\\n"
            f"loras: [{{name: {full_size}/lora_sdxl_kohya.safetensors}}]\\n')); "
            "print(r.ok, [m for m in ('torch', 'diffusers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "[]"]


def test_renamed_coverage_still_fails_a_lora_of_other_widths(full_size: Path) -> None:
    """The renamed base modules are shape-checked: an SD1.5 LoRA on SD2.1 (cross-attention 1024,
    OpenCLIP-H) matches names but not widths, in the UNet and the text encoder."""
    d = full_size
    report = _check(f"base: {d}/sd21_768v_modelspec.safetensors\nloras: [{{name: {d}/lora_sd15_kohya.safetensors}}]\n")
    mismatch = _codes(report)["lora-shape-mismatch"]
    assert any(m.startswith("unet: ") and "input width 768 != base 1024" in m for m in mismatch), mismatch
    assert any(m.startswith("text_encoder: ") for m in mismatch), mismatch
    assert "lora-coverage-unchecked" not in _codes(report)
