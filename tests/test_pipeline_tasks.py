"""Tasks (text-to-image, image-to-image, inpainting): read from the spec or its smoke inputs or
decided by the base's UNet, checked against the base from headers, and run by the smoke stage
exactly as a plain diffusers pipeline of the same components runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pipeline_helpers import assemble_and_smoke, task_assets, write_spec  # noqa: F401 - fixture

from assetkit.pipeline import SpecError, parse_spec
from assetkit.pipeline.compat import compat_paths
from assetkit.pipeline.spec import spec_from_dict


@pytest.mark.parametrize(("smoke", "task"), [
    ("{}", None), ("{init_image: in.png}", "image-to-image"),
    ("{init_image: in.png, mask_image: m.png, strength: 0.5}", "inpainting"), ("{mask_image: m.png}", "inpainting"),
])
def test_task_from_smoke_inputs(smoke: str, task: str | None) -> None:
    spec = parse_spec(f"base: x\nsmoke: {smoke}\n")
    assert spec.task == task
    assert spec_from_dict(spec.to_dict()).to_dict() == spec.to_dict()


@pytest.mark.parametrize(("text", "line", "words"), [
    ("base: x\ntask: text-to-image\nsmoke: {init_image: a.png}\n", 2, "task text-to-image does not take "
                                                                        "smoke.init_image"),
    ("base: x\ntask: image-to-image\nsmoke: {mask_image: a.png}\n", 2, "does not take smoke.mask_image"),
    ("base: x\nsmoke:\n  strength: 1.5\n", 3, "smoke.strength must be above 0 and at most 1"),
    ("base: x\nsmoke:\n  init_image: 3\n", 3, "smoke.init_image must be a string"),
    ("base: x\nsmoke:\n  ip_adapter_image: a.png\n", 3, "smoke.ip_adapter_image needs an ip_adapter"),
    ("base: x\ncontrolnets: [c]\nsmoke: {init_image: a.png}\n", 2, "with controlnets is not supported"),
])
def test_bad_task_fields_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, where="pipe.yaml")
    assert str(info.value).startswith(f"pipe.yaml:{line}: "), str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize(("base", "task", "expected", "problem"), [
    ("sd1", None, "text-to-image", None),
    ("sd1", "image-to-image", "image-to-image", None),
    ("inpaint", None, "inpainting", None),  # decided by the 9-channel conv_in
    ("sd1", "inpainting", "inpainting", "inpainting asked of a 4-channel UNet (conv_in.weight [32, 4, 3, 3]"),
    ("inpaint", "text-to-image", "text-to-image", "(9 input channels = latent + mask + masked image; "
                                                  "conv_in.weight [32, 9, 3, 3]"),
])
def test_task_against_the_base(task_assets, base: str, task: str | None, expected: str,  # noqa: F811
                               problem: str | None) -> None:
    text = f"base: {task_assets[base]}\n" + (f"task: {task}\n" if task else "")
    report = compat_paths(parse_spec(text))
    assert report.base["task"] == expected
    assert report.base["pipeline"] == {"text-to-image": "AutoPipelineForText2Image",
                                       "image-to-image": "AutoPipelineForImage2Image",
                                       "inpainting": "AutoPipelineForInpainting"}[expected]
    mismatches = [f for f in report.findings if f.code == "task-mismatch"]
    if problem is None:
        assert report.ok and not mismatches, report.findings
    else:
        assert not report.ok and len(mismatches) == 1 and problem in mismatches[0].message, mismatches


def _write_png(path: Path, array) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def _generator():
    import torch

    return torch.Generator("cpu").manual_seed(3)


@pytest.mark.slow
def test_image_to_image_smoke_equals_plain_diffusers(task_assets, tmp_path: Path) -> None:  # noqa: F811
    import numpy as np
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    rng = np.random.default_rng(1)
    _write_png(tmp_path / "in.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    spec = write_spec(tmp_path, f"base: {task_assets['sd1']}\n"
                                "smoke: {prompt: a red house, steps: 4, seed: 3, init_image: in.png, strength: 0.6, height: 32, "
                                "width: 32}\n")
    assembled, result = assemble_and_smoke(spec)
    assert result.ok, result.findings
    assert type(assembled.pipe).__name__ == "StableDiffusionImg2ImgPipeline" and assembled.task == "image-to-image"
    assert [i.label for i in result.images] == ["output", "init image"]
    oracle = StableDiffusionImg2ImgPipeline.from_pretrained(str(task_assets["sd1"]), local_files_only=True)
    oracle.set_progress_bar_config(disable=True)
    expected = oracle("a red house", image=Image.open(tmp_path / "in.png").convert("RGB"), strength=0.6,
                      num_inference_steps=4, guidance_scale=5.0, generator=_generator(), output_type="np").images[0]
    np.testing.assert_allclose(result.images[0].array, expected, atol=1e-4, rtol=0)
    assert np.abs(result.images[0].array - expected).max() < 1e-4


@pytest.mark.slow
def test_inpainting_smoke_equals_plain_diffusers(task_assets, tmp_path: Path) -> None:  # noqa: F811
    import numpy as np
    from diffusers import StableDiffusionInpaintPipeline
    from PIL import Image

    rng = np.random.default_rng(2)
    _write_png(tmp_path / "in.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[4:20, 8:28] = 255
    _write_png(tmp_path / "mask.png", mask)
    # no task: the 9-channel UNet makes it inpainting
    spec = write_spec(tmp_path, f"base: {task_assets['inpaint']}\n"
                                "smoke: {prompt: a cat, steps: 3, seed: 3, init_image: in.png, mask_image: mask.png, "
                                "strength: 0.9, height: 32, width: 32}\n")
    assembled, result = assemble_and_smoke(spec)
    assert result.ok, result.findings
    assert type(assembled.pipe).__name__ == "StableDiffusionInpaintPipeline"
    oracle = StableDiffusionInpaintPipeline.from_pretrained(str(task_assets["inpaint"]), local_files_only=True)
    oracle.set_progress_bar_config(disable=True)
    expected = oracle("a cat", image=Image.open(tmp_path / "in.png").convert("RGB"),
                      mask_image=Image.open(tmp_path / "mask.png").convert("L"), height=32, width=32, strength=0.9,
                      num_inference_steps=3, guidance_scale=5.0, generator=_generator(), output_type="np").images[0]
    assert np.abs(result.images[0].array - expected).max() < 1e-4
    # the smoke image is not the init image passed through: the masked part was generated
    assert np.abs(result.images[0].array - np.asarray(Image.open(tmp_path / "in.png"), dtype="float32") / 255).max() > 0.1


def test_unreadable_mask_is_a_smoke_input_finding(task_assets, tmp_path: Path) -> None:  # noqa: F811
    from assetkit.pipeline.gate import run_check

    (tmp_path / "mask.png").write_bytes(b"not a png at all")
    spec = write_spec(tmp_path, f"base: {task_assets['inpaint']}\nsmoke: {{steps: 1, mask_image: mask.png}}\n")
    result = run_check(spec, device="cpu")
    assert not result.ok
    codes = [(f.code, f.where) for f in result.suites["smoke"]]
    assert codes == [("smoke-input", "smoke.mask_image")], result.suites["smoke"]
    assert str(tmp_path / "mask.png") in result.suites["smoke"][0].message


def test_controlnet_on_an_inpainting_base_is_unsupported(task_assets, tmp_path: Path) -> None:  # noqa: F811
    from assetkit.factory.pipeline_assets import save_tiny_controlnet

    controlnet = save_tiny_controlnet(task_assets["sd1"], tmp_path / "cn")
    report = compat_paths(parse_spec(f"base: {task_assets['inpaint']}\ncontrolnets: [{controlnet}]\n"))
    hits = [f.message for f in report.findings if f.code == "task-unsupported"]
    assert hits == ["ControlNets are smoke-tested with text-to-image only; the task is inpainting (decided by the "
                    "base UNet)"], report.findings


def test_too_few_steps_for_the_strength_is_a_smoke_input_finding(task_assets, tmp_path: Path) -> None:  # noqa: F811
    from assetkit.pipeline.gate import run_check

    spec = write_spec(tmp_path, f"base: {task_assets['sd1']}\ntask: image-to-image\n"
                                "smoke: {steps: 1, strength: 0.5, height: 32, width: 32}\n")
    result = run_check(spec, device="cpu")
    messages = [(f.code, f.message) for f in result.suites["smoke"]]
    assert messages == [("smoke-input", "smoke.steps 1 x smoke.strength 0.5 leaves no denoising step (int(steps x "
                                        "strength) = 0): raise smoke.steps or smoke.strength")]
