"""The images a smoke run feeds its pipeline besides the prompt: the init image (image-to-image,
inpainting), the mask (inpainting) and the IP-Adapter's image; each read from the spec's path
(relative to the spec) or made here when the spec names none. An image that cannot be read is a
``smoke-input`` finding naming the field and the file.

Also the call arguments of the task: what diffusers' image-to-image and inpainting pipelines take
on top of text-to-image's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from ..findings import Finding


def synthetic_init_image(height: int, width: int) -> Any:
    """A smooth colour gradient with a bright disc: structure for the VAE to encode."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x / max(1, width - 1), y / max(1, height - 1), 1 - x / max(1, width - 1)], axis=-1) * 200
    disc = (x - width / 3) ** 2 + (y - height / 3) ** 2 < (min(height, width) / 5) ** 2
    img[disc] = 250
    return Image.fromarray(img.astype(np.uint8))


def synthetic_mask(height: int, width: int) -> Any:
    """White (repaint) over the centre half, black (keep) around it."""
    import numpy as np
    from PIL import Image

    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 255
    return Image.fromarray(mask)  # 2-D uint8: mode L


def synthetic_ip_image(size: int = 64) -> Any:
    """A checkerboard of two colours: the IP-Adapter's reference image."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size]
    board = ((x // 8 + y // 8) % 2).astype(bool)
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[board] = (220, 60, 40)
    img[~board] = (30, 90, 200)
    return Image.fromarray(img)


@dataclass
class SmokeInputs:
    init_image: Any = None
    mask_image: Any = None
    ip_adapter_image: Any = None
    findings: list[Finding] = field(default_factory=list)


def _read(spec: Any, key: str, mode: str, out: SmokeInputs) -> Any:
    from PIL import Image, UnidentifiedImageError

    path = spec.root / getattr(spec.smoke, key)
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else f"not a readable image ({exc})"
        out.findings.append(Finding("smoke-input", "error", f"smoke.{key} {path}: {reason}", f"smoke.{key}"))
        return None


def load_inputs(spec: Any, task: str, ip_adapter: bool) -> SmokeInputs:
    """The task's images at the smoke size (a finding for each one that cannot be read)."""
    s = spec.smoke
    out = SmokeInputs()
    if task in ("image-to-image", "inpainting"):
        image = _read(spec, "init_image", "RGB", out) if s.init_image else synthetic_init_image(s.height, s.width)
        out.init_image = image.resize((s.width, s.height)) if image is not None else None
    if task == "inpainting":
        mask = _read(spec, "mask_image", "L", out) if s.mask_image else synthetic_mask(s.height, s.width)
        out.mask_image = mask.resize((s.width, s.height)) if mask is not None else None
    if ip_adapter:
        out.ip_adapter_image = _read(spec, "ip_adapter_image", "RGB", out) if s.ip_adapter_image \
            else synthetic_ip_image()
    return out


def strength_finding(pipe: Any, spec: Any) -> Finding | None:
    """A ``smoke-input`` finding when ``steps`` x ``strength`` leaves no denoising step (diffusers'
    image-to-image and inpainting pipelines run ``int(steps * strength)`` of them); ``strength``
    is the spec's, else the pipeline's own default (0.8 for SD image-to-image, 0.3 for SDXL's)."""
    parameter = inspect.signature(pipe.__call__).parameters.get("strength")
    if parameter is None:
        return None
    strength = spec.smoke.strength if spec.smoke.strength is not None else parameter.default
    if not isinstance(strength, int | float) or int(spec.smoke.steps * strength) >= 1:
        return None
    source = "smoke.strength" if spec.smoke.strength is not None else f"{type(pipe).__name__}'s default strength"
    return Finding("smoke-input", "error",
                   f"smoke.steps {spec.smoke.steps} x {source} {strength} leaves no denoising step "
                   f"(int(steps x strength) = 0): raise smoke.steps or smoke.strength", "smoke.strength")


def task_kwargs(pipe: Any, spec: Any, inputs: SmokeInputs, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` (a text-to-image call) with the task's images and strength; height and width
    dropped where the pipeline takes its size from the init image (diffusers' image-to-image)."""
    out = dict(kwargs)
    if inputs.init_image is not None:
        out["image"] = inputs.init_image
        if spec.smoke.strength is not None:
            out["strength"] = spec.smoke.strength
    if inputs.mask_image is not None:
        out["mask_image"] = inputs.mask_image
    if inputs.ip_adapter_image is not None:
        out["ip_adapter_image"] = inputs.ip_adapter_image
    accepted = inspect.signature(pipe.__call__).parameters
    for key in ("height", "width"):
        if key not in accepted:
            out.pop(key, None)
    return out
