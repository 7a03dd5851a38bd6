"""Which task a spec runs (text-to-image, image-to-image, inpainting) and whether its base can.

The task is the spec's ``task`` when given, else what its smoke inputs ask for (``mask_image``:
inpainting, ``init_image``: image-to-image, decided when the spec is read), else the base's
variant: a UNet whose ``conv_in`` takes the latent channels plus a mask and a masked-image latent
(9 for a 4-channel latent) is an inpainting model. The pipeline class is then chosen as diffusers'
AutoPipeline does: the AutoPipeline of the task maps the base's pipeline class to its sibling.
Light: no torch; the decision uses header widths only.
"""

from __future__ import annotations

from typing import Any

from ..findings import Finding

AUTO_PIPELINES = {"text-to-image": "AutoPipelineForText2Image", "image-to-image": "AutoPipelineForImage2Image",
                  "inpainting": "AutoPipelineForInpainting"}
#: conv_in channels an inpainting UNet adds to the latent: the mask (1) and the masked image's latent.
_INPAINT_EXTRA = 1


def is_inpaint_unet(in_channels: int | None, out_channels: int | None) -> bool:
    """conv_in = latent + mask + masked-image latent (9 for a 4-channel latent)."""
    return in_channels is not None and out_channels is not None and in_channels == 2 * out_channels + _INPAINT_EXTRA


def resolve_task(requested: str | None, in_channels: int | None, out_channels: int | None) -> str:
    """The spec's task, else inpainting for an inpainting UNet, else text-to-image."""
    if requested:
        return requested
    return "inpainting" if is_inpaint_unet(in_channels, out_channels) else "text-to-image"


def task_findings(requested: str | None, unet: Any, where: str = "task", *,
                  controlnets: int = 0) -> tuple[str, list[Finding]]:
    """(the task, a ``task-mismatch`` finding for each way the base UNet cannot run it, and a
    ``task-unsupported`` one for ControlNets on an image task).

    ``unet``: :class:`assetkit.pipeline.compat.UNetFacts` of the base (in/out channels with the key
    that gave them)."""
    task = resolve_task(requested, unet.in_channels, unet.out_channels)
    findings: list[Finding] = []
    if controlnets and task != "text-to-image":
        findings.append(Finding("task-unsupported", "error",
                                f"ControlNets are smoke-tested with text-to-image only; the task is {task}"
                                f"{'' if requested else ' (decided by the base UNet)'}", where))
    cin, cout = unet.in_channels, unet.out_channels
    if cin is None or cout is None:
        return task, findings
    evidence = f"{unet.evidence.get('in_channels', 'conv_in')}, {cout} latent channels"
    if is_inpaint_unet(cin, cout):
        if task != "inpainting":
            findings.append(Finding("task-mismatch", "error",
                                    f"{task} asked of an inpainting UNet ({cin} input channels = latent + mask + "
                                    f"masked image; {evidence}): it needs task inpainting", where))
    elif cin != cout:
        findings.append(Finding("task-mismatch", "error",
                                f"a UNet with {cin} input channels for {cout} latent channels ({evidence}) is a "
                                f"variant (depth, instruct-pix2pix, upscale) with its own pipeline, not {task}",
                                where))
    elif task == "inpainting":
        findings.append(Finding("task-mismatch", "error",
                                f"inpainting asked of a {cin}-channel UNet ({evidence}): not an inpainting model "
                                f"(that takes {2 * cout + _INPAINT_EXTRA} channels: latent + mask + masked image)",
                                where))
    return task, findings
