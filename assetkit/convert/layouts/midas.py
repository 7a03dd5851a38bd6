"""MiDaS DPT-Hybrid (the depth model SD2-depth carries as ``depth_model.model.*``) <-> transformers'
``DPTForDepthEstimation`` with a hybrid (BiT + ViT) backbone, driven by the transformers config.

Original names are those of isl-org's DPT/MiDaS ``DPTDepthModel`` over timm's
``vit_base_resnet50_384``: ``pretrained.model.*`` (``cls_token``, ``pos_embed``, the ResNet stem
and stages under ``patch_embed.backbone``, ``patch_embed.proj``, ViT ``blocks.N`` with a fused
``attn.qkv``, the final ``norm``), ``pretrained.act_postprocess{1..4}`` (readout projections and
resize convolutions of the stages the hybrid reassembles), ``scratch.layerN_rn``,
``scratch.refinenetN`` (fusion blocks, the deepest first) and ``scratch.output_conv`` (the head).
The transformers names follow its ``convert_dpt_hybrid_to_pytorch.py``. The timm classifier head
(``pretrained.model.head.*``) has no place in ``DPTForDepthEstimation``: it stays unmatched.
"""

from __future__ import annotations

from typing import Any

from ..keymap import KeyMapError, Rule, params, rename

#: The GroupNorm-ed convolutions of one BiT bottleneck block (weights only for the convolutions).
_BOTTLENECK = ("conv1", "norm1", "conv2", "norm2", "conv3", "norm3")


def _backbone_rules(config: dict[str, Any]) -> list[Rule]:
    """The BiT (ResNetV2) stem and stages of the hybrid embedding."""
    orig, hf = "pretrained.model.patch_embed.backbone", "dpt.embeddings.backbone.bit"
    rules = [rename(f"{orig}.stem.conv.weight", f"{hf}.embedder.convolution.weight"),
             *params(f"{orig}.stem.norm", f"{hf}.embedder.norm")]
    depths = list((config.get("backbone_config") or {}).get("depths") or (3, 4, 9))
    for stage, blocks in enumerate(depths):
        for block in range(blocks):
            o = f"{orig}.stages.{stage}.blocks.{block}"
            d = f"{hf}.encoder.stages.{stage}.layers.{block}"
            parts = (("downsample.conv", "downsample.norm") if block == 0 else ()) + _BOTTLENECK
            for part in parts:
                names = ("weight",) if part.split(".")[-1].startswith("conv") else ("weight", "bias")
                rules += params(f"{o}.{part}", f"{d}.{part}", names)
    return rules


def _vit_rules(config: dict[str, Any]) -> list[Rule]:
    """Tokens, position embeddings, the patch projection and the transformer blocks."""
    o, d = "pretrained.model", "dpt"
    rules = [rename(f"{o}.cls_token", f"{d}.embeddings.cls_token"),
             rename(f"{o}.pos_embed", f"{d}.embeddings.position_embeddings"),
             *params(f"{o}.patch_embed.proj", f"{d}.embeddings.projection")]
    for i in range(config.get("num_hidden_layers", 12)):
        b, layer = f"{o}.blocks.{i}", f"{d}.encoder.layer.{i}"
        for kind in ("weight", "bias"):
            rules.append(Rule((f"{b}.attn.qkv.{kind}",),
                              tuple(f"{layer}.attention.attention.{q}.{kind}" for q in ("query", "key", "value")),
                              "split"))
        rules += [*params(f"{b}.attn.proj", f"{layer}.attention.output.dense"),
                  *params(f"{b}.norm1", f"{layer}.layernorm_before"), *params(f"{b}.norm2", f"{layer}.layernorm_after"),
                  *params(f"{b}.mlp.fc1", f"{layer}.intermediate.dense"), *params(f"{b}.mlp.fc2", f"{layer}.output.dense")]
    rules += params(f"{o}.norm", f"{d}.layernorm")
    return rules


def _neck_rules(config: dict[str, Any]) -> list[Rule]:
    """Reassemble stage (readout projections, 1x1 projections, resizes), the 3x3 convs, the
    fusion blocks (``refinenet4`` is transformers' first) and the depth head."""
    sizes = list(config.get("neck_hidden_sizes") or ())
    factors = list(config.get("reassemble_factors") or ())
    ignored = set(config.get("neck_ignore_stages") or (0, 1))
    rules: list[Rule] = []
    for i, factor in enumerate(factors):
        if i in ignored:  # the hybrid takes these stages from the ResNet: no readout, no projection
            continue
        post, stage = f"pretrained.act_postprocess{i + 1}", "neck.reassemble_stage"
        if config.get("readout_type", "project") == "project":
            rules += params(f"{post}.0.project.0", f"{stage}.readout_projects.{i}.0")
        rules += params(f"{post}.3", f"{stage}.layers.{i}.projection")
        if factor != 1:
            rules += params(f"{post}.4", f"{stage}.layers.{i}.resize")
    n = len(sizes)
    for i in range(n):
        rules.append(rename(f"scratch.layer{i + 1}_rn.weight", f"neck.convs.{i}.weight"))
    bias = ("weight", "bias") if config.get("use_bias_in_fusion_residual") is not False else ("weight",)
    for j in range(n):
        o, d = f"scratch.refinenet{n - j}", f"neck.fusion_stage.layers.{j}"
        rules += params(f"{o}.out_conv", f"{d}.projection")
        for unit in (1, 2):
            for conv in (1, 2):
                rules += params(f"{o}.resConfUnit{unit}.conv{conv}", f"{d}.residual_layer{unit}.convolution{conv}", bias)
    for k in (0, 2, 4):
        rules += params(f"scratch.output_conv.{k}", f"head.head.{k}")
    return rules


def midas_rules(config: dict[str, Any]) -> list[Rule]:
    """Every tensor of a hybrid ``DPTForDepthEstimation`` with this config, original <-> transformers."""
    unsupported = [name for name, bad in (("is_hybrid: false", not config.get("is_hybrid")),
                                           ("use_batch_norm_in_fusion_residual", config.get("use_batch_norm_in_fusion_residual")),
                                           ("add_projection", config.get("add_projection"))) if bad]
    if unsupported:
        raise KeyMapError("DPT depth models with " + ", ".join(unsupported) + " have no key map yet "
                                  "(only MiDaS DPT-Hybrid, as SD2-depth carries it)")
    return [*_vit_rules(config), *_backbone_rules(config), *_neck_rules(config)]
