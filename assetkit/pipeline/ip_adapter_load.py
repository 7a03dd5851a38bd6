"""Loading an IP-Adapter and its CLIP image encoder offline (the heavy half: torch, diffusers and
transformers are imported inside the functions).

The image encoder is a local ``CLIPVisionModelWithProjection`` folder handed to the pipeline as
its ``image_encoder`` component; the adapter is a local file given to diffusers'
``load_ip_adapter`` (``local_files_only=True``, the encoder already in place so that nothing else
is looked up), then its scale is set. A pickle adapter (the released ``.bin`` files) is converted
to safetensors first by assetkit's own reader, so that diffusers never unpickles it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import AssetkitError


def load_image_encoder(sources: dict[str, Any], torch_dtype: Any) -> tuple[Path, Any]:
    """(folder, model) of the spec's image encoder."""
    from transformers import CLIPVisionModelWithProjection

    if "image_encoder" not in sources:
        raise AssetkitError("ip_adapter: no image_encoder named (a CLIP vision model folder)")
    folder = Path(sources["image_encoder"].path)
    if not (folder / "config.json").is_file():
        raise AssetkitError("image_encoder: not a CLIP vision model folder (config.json + weights)", where=str(folder))
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(str(folder), dtype=torch_dtype, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise AssetkitError(f"transformers could not load the image encoder offline: {exc}", where=str(folder)) from None
    return folder, model


def as_safetensors(path: Path, workdir: Path) -> Path:
    """``path`` when it is a safetensors file named so (diffusers goes by the suffix), else its
    conversion under ``workdir`` (once per size and modification time)."""
    from ..convert import convert_file
    from ..formats import sniff_path

    if path.suffix == ".safetensors" and sniff_path(path) == "safetensors":
        return path
    stat = path.stat()
    out = workdir / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}.safetensors"
    if not out.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        convert_file(path, out)
    return out


def load_ip_adapter(pipe: Any, path: Path, scale: float, workdir: Path) -> dict[str, Any]:
    """Load the IP-Adapter file ``path`` into ``pipe`` at ``scale``; returns the UNet's attention
    processors from before (the smoke stage puts them back to see the base image)."""
    from ..formats import open_asset
    from .ip_adapter_compat import image_projection

    if not path.is_file():
        raise AssetkitError("ip_adapter: an IP-Adapter is one weights file, not a folder", where=str(path))
    with open_asset(path) as asset:
        projection = image_projection(asset.tensors)
    if projection is not None and projection.reads is None:
        raise AssetkitError("ip_adapter: a FaceID IP-Adapter reads face embeddings (insightface), which a smoke "
                            "run cannot make from an image", where=str(path))
    path = as_safetensors(path, workdir)
    plain = dict(pipe.unet.attn_processors)
    try:
        pipe.load_ip_adapter(str(path.parent), subfolder="", weight_name=path.name, image_encoder_folder=None,
                             local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise AssetkitError(f"diffusers could not load the IP-Adapter: {exc}", where=str(path)) from None
    pipe.set_ip_adapter_scale(scale)
    return plain


@contextmanager
def without_ip_adapter(pipe: Any, plain_processors: dict[str, Any]) -> Iterator[None]:
    """Within: the UNet as before the IP-Adapter was loaded (its own attention processors, no image
    projection); afterwards the adapter is back as it was."""
    unet = pipe.unet
    ip_processors, projection = dict(unet.attn_processors), unet.encoder_hid_proj
    unet.set_attn_processor(plain_processors)
    unet.encoder_hid_proj = None
    try:
        yield
    finally:
        unet.set_attn_processor(ip_processors)
        unet.encoder_hid_proj = projection
