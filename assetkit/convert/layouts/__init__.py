"""One key-map rule module per component, each turning a component config into
:class:`~assetkit.convert.keymap.Rule` rows (original names <-> diffusers names, no prefixes)."""

from __future__ import annotations

from .clip import clip_text_rules, open_clip_text_rules
from .controlnet import controlnet_rules
from .flux import flux_transformer_rules
from .midas import midas_rules
from .sd3 import sd3_transformer_rules
from .unet import unet_rules
from .vae import vae_rules

__all__ = ["clip_text_rules", "controlnet_rules", "flux_transformer_rules", "midas_rules", "open_clip_text_rules",
           "sd3_transformer_rules", "unet_rules", "vae_rules"]
