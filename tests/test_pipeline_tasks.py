"""Tasks (text-to-image, image-to-image, inpainting): read from the spec or its smoke inputs or
decided by the base's UNet, checked against the base from headers, and run by the smoke stage
exactly as a plain diffusers pipeline of the same components runs them."""

from __future__ import annotations

import pytest
from _pipeline_helpers import task_assets, write_spec  # noqa: F401 - fixture

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
