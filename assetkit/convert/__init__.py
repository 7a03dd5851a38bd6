"""convert: checkpoints to safetensors (streaming, exact, verified), precision variants, batches.

Imports neither torch nor diffusers: conversion reads the source through assetkit's own
readers and never runs a pickle.
"""

from __future__ import annotations

from .batch import BatchItem, BatchReport, convert_tree, convert_variant_folder
from .dtype_cast import CASTABLE, cast_bytes, output_dtype
from .hygiene import HygienePlan, hygiene_edit
from .keymap import Rule, SourcePart, TargetTensor
from .layout_convert import (
    SIDECAR,
    ComponentPlan,
    ConfigMismatchError,
    DiffusersPlan,
    LayoutError,
    SingleFilePlan,
    convert_layout,
    plan_diffusers_to_single_file,
    plan_single_file_to_diffusers,
    write_diffusers_folder,
    write_single_file,
)
from .lora_formats import LoraConvertReport, convert_lora
from .options import ConvertOptions
from .to_safetensors import ConversionPlan, ConvertReport, convert_file, plan_conversion, select_tensors

__all__ = [
    "CASTABLE",
    "SIDECAR",
    "ComponentPlan",
    "ConfigMismatchError",
    "DiffusersPlan",
    "LayoutError",
    "Rule",
    "SingleFilePlan",
    "SourcePart",
    "TargetTensor",
    "plan_diffusers_to_single_file",
    "plan_single_file_to_diffusers",
    "write_diffusers_folder",
    "write_single_file",
    "BatchItem",
    "BatchReport",
    "ConversionPlan",
    "ConvertOptions",
    "ConvertReport",
    "cast_bytes",
    "convert_layout",
    "convert_file",
    "convert_tree",
    "convert_variant_folder",
    "output_dtype",
    "plan_conversion",
    "select_tensors",
    "HygienePlan",
    "LoraConvertReport",
    "convert_lora",
    "hygiene_edit",
]
