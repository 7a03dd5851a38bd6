"""The one frozen options object threaded through convert, and the keyword arguments other code
(and other branches) pass to ``convert_file`` / ``convert_tree`` still meaning the same."""

from __future__ import annotations

import dataclasses

import pytest
from safetensors.numpy import load_file

from assetkit.convert import ConvertOptions, convert_file, convert_tree
from assetkit.factory import make_fixture


def test_options_are_frozen_and_reject_unknown_names() -> None:
    options = ConvertOptions(dtype="fp16", metadata={"a": "1"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.dtype = "bf16"  # type: ignore[misc]
    with pytest.raises(TypeError):
        options.metadata["b"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError, match="unknown conversion option"):
        ConvertOptions.from_kwargs(dtyp="fp16")
    assert ConvertOptions(only="x.").transforms and not ConvertOptions(verify=False).transforms


def test_options_object_and_keyword_arguments_give_the_same_file(tmp_path) -> None:
    source = make_fixture("vae_sd", tmp_path, "torch-zip")
    by_kwargs = convert_file(source, tmp_path / "a.safetensors", dtype="fp16", metadata={"k": "v"})
    by_options = convert_file(source, tmp_path / "b.safetensors",
                              options=ConvertOptions(dtype="fp16", metadata={"k": "v"}))
    assert by_kwargs.dtype_changes == by_options.dtype_changes and by_kwargs.verified and by_options.verified
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert by_kwargs.metadata["k"] == by_options.metadata["k"] == "v"


def test_convert_tree_takes_keyword_arguments_or_options(tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_fixture("vae_sd", src, "safetensors")
    # a .safetensors source is picked up only with a transformation, however it is asked for
    assert convert_tree(src, tmp_path / "o1").summary()["files"] == 0
    assert convert_tree(src, tmp_path / "o2", dtype="fp16").summary()["converted"] == 1
    assert convert_tree(src, tmp_path / "o3", options=ConvertOptions(dtype="fp16")).summary()["converted"] == 1
