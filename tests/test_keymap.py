"""The key-map engine and its rule modules: sound rules, map ∘ inverse = identity over random
configs (hypothesis), and the diffusers names equal to what diffusers itself builds."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assetkit.convert.keymap import KeyMapError, Rule, SourcePart, check_rules, map_names
from assetkit.convert.layouts import clip_text_rules, open_clip_text_rules, unet_rules, vae_rules


def _original_index(rules: list[Rule]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Made-up original shapes that fit each rule's operation."""
    out = {}
    for i, rule in enumerate(rules):
        w = 2 + i % 3
        shape = {"split": (3 * w, w), "squeeze": (w, w, 1, 1), "transpose": (w, w + 1)}.get(rule.op, (w, w + 2))
        out[rule.original[0]] = ("F16" if i % 2 else "F32", shape)
    return out


def _assert_identity(rules: list[Rule]) -> None:
    assert check_rules(rules) == []
    source = _original_index(rules)
    forward = map_names(rules, source, "to_diffusers")
    assert forward.unmatched == () and forward.missing == ()
    middle = {t.name: (t.dtype, t.shape) for t in forward.targets}
    by_name = {t.name: t for t in forward.targets}
    back = map_names(rules, middle, "to_original")
    assert back.unmatched == () and back.missing == ()
    assert {t.name: (t.dtype, t.shape) for t in back.targets} == source
    for t in back.targets:
        # compose the byte ranges: the way back reads exactly the original tensor, in order, once
        ranges: list[SourcePart] = []
        for part in t.parts:
            inner = by_name[part.source]
            assert part.start == 0 and part.stop == inner.nbytes
            ranges.extend(inner.parts)
        assert all(r.source == t.name for r in ranges)
        assert [(r.start, r.stop) for r in ranges] == [(sum(x.stop - x.start for x in ranges[:k]), ranges[k].stop)
                                                        for k in range(len(ranges))]
        assert ranges[-1].stop == t.nbytes
        if t.transform == "transpose":
            assert by_name[t.parts[0].source].transform == "transpose"


blocks = st.integers(1, 4)


@st.composite
def unet_configs(draw):
    n = draw(blocks)
    attn = [draw(st.booleans()) for _ in range(n)]
    base = draw(st.sampled_from([32, 64]))
    channels = [base * draw(st.integers(1, 3)) for _ in range(n)]
    config = {"block_out_channels": channels, "layers_per_block": draw(st.integers(1, 3)),
              "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
              "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
              "transformer_layers_per_block": [draw(st.integers(1, 3)) for _ in range(n)],
              "cross_attention_dim": 16, "attention_head_dim": 2, "norm_num_groups": 16, "sample_size": 8,
              "use_linear_projection": draw(st.booleans())}
    if draw(st.booleans()):
        config.update(addition_embed_type="text_time", addition_time_embed_dim=4,
                      projection_class_embeddings_input_dim=24)
    return config


@st.composite
def vae_configs(draw):
    n = draw(blocks)
    return {"block_out_channels": [16 * draw(st.integers(1, 3)) for _ in range(n)],
            "layers_per_block": draw(st.integers(1, 3)), "norm_num_groups": 8,
            "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n}


def _diffusers_names(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unet_configs())
def test_unet_rules_are_reversible_and_match_diffusers(config):
    import torch
    from diffusers import UNet2DConditionModel

    if not any(t.startswith("CrossAttn") for t in config["down_block_types"]):
        config["mid_block_type"] = "UNetMidBlock2DCrossAttn"
    rules = unet_rules(config)
    _assert_identity(rules)
    with torch.device("meta"):
        model = UNet2DConditionModel(**config)
    assert {r.diffusers[0] for r in rules} == set(_diffusers_names(model))


@settings(max_examples=25, deadline=None)
@given(vae_configs())
def test_vae_rules_are_reversible_and_match_diffusers(config):
    import torch
    from diffusers import AutoencoderKL

    rules = vae_rules(config)
    _assert_identity(rules)
    with torch.device("meta"):
        model = AutoencoderKL(**config)
    assert {r.diffusers[0] for r in rules} == set(_diffusers_names(model))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.booleans(), st.booleans())
def test_text_encoder_rules_are_reversible_and_match_transformers(layers, projection, open_clip):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    arch = "CLIPTextModelWithProjection" if projection else "CLIPTextModel"
    config = {"num_hidden_layers": layers, "architectures": [arch]}
    rules = open_clip_text_rules(config) if open_clip else clip_text_rules(config)
    _assert_identity(rules)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    with torch.device("meta"):
        model = cls(CLIPTextConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2,
                                   num_hidden_layers=layers, projection_dim=8))
    names = {n for r in rules for n in r.diffusers}
    assert names == set(_diffusers_names(model))


def test_ambiguous_rules_are_reported():
    rules = [Rule(("a",), ("x",)), Rule(("b",), ("x",))]
    assert check_rules(rules) == ["diffusers name x maps to 2 places"]
    with pytest.raises(KeyMapError):
        map_names(rules, {"a": ("F32", (1,)), "b": ("F32", (1,))}, "to_diffusers")


def test_split_needs_equal_parts_and_squeeze_needs_1x1():
    with pytest.raises(KeyMapError):
        map_names([Rule(("w",), ("q", "k", "v"), "split")], {"w": ("F32", (4, 2))}, "to_diffusers")
    with pytest.raises(KeyMapError):
        map_names([Rule(("w",), ("l",), "squeeze")], {"w": ("F32", (4, 2, 3, 3))}, "to_diffusers")


def test_unmatched_and_missing_are_reported_not_invented():
    rules = [Rule(("a",), ("x",)), Rule(("b",), ("y",))]
    mapped = map_names(rules, {"a": ("F32", (2,)), "junk": ("F32", (1,))}, "to_diffusers")
    assert [t.name for t in mapped.targets] == ["x"]
    assert mapped.unmatched == ("junk",) and mapped.missing == ("b",)
