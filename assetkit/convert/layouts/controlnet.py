"""ControlNetModel <-> the original ``ControlNet`` (``control_model.*`` or prefix-less): the
UNet encoder and middle block, the hint encoder, one zero conv per encoder output and the
middle-block output conv."""

from __future__ import annotations

from typing import Any

from ..keymap import Rule, params
from .unet import encoder_rules


def controlnet_rules(config: dict[str, Any]) -> list[Rule]:
    rules, outputs = encoder_rules(config)
    hint = list(config.get("conditioning_embedding_out_channels") or (16, 32, 96, 256))
    rules += params("input_hint_block.0", "controlnet_cond_embedding.conv_in")
    # LDM hint block: conv (0), then pairs of convs at 2, 4, ... and the last conv at 14.
    idx = 2
    for j in range(2 * (len(hint) - 1)):
        rules += params(f"input_hint_block.{idx}", f"controlnet_cond_embedding.blocks.{j}")
        idx += 2
    rules += params(f"input_hint_block.{idx}", "controlnet_cond_embedding.conv_out")
    for j, _ in enumerate(outputs):
        rules += params(f"zero_convs.{j}.0", f"controlnet_down_blocks.{j}")
    rules += params("middle_block_out.0", "controlnet_mid_block")
    return rules
