"""Turn a layout into files: tiny checkpoints with real names, or full-size sparse safetensors.

Writing goes through the real libraries on purpose - ``safetensors.numpy``/``safetensors.torch``
``save_file`` and ``torch.save`` (zip and legacy) - so that assetkit's own readers are tested
against independent writers. Only :func:`write_sparse_safetensors` formats a header itself (the
libraries cannot write a file whose data section is a hole).

Shrinking rule (tiny files, a few MB at most, every name real)
---------------------------------------------------------------
For each tensor of the full-size layout:

1. a tensor of at most :data:`KEEP_REAL_NUMEL` (16,384) elements keeps its real shape - biases,
   norms, ``quant_conv``, ``input_hint_block.*``, schedule buffers, most LoRA down matrices,
   textual-inversion vectors all stay exact;
2. a larger tensor keeps its rank; each dimension ``d > 64`` becomes ``max(1, d // 64)`` and each
   dimension ``d <= 64`` stays. Dividing every big dimension by the same factor keeps the ratios
   that converters rely on (fused ``qkv`` = 3 x hidden, GEGLU = 2 x 4 x hidden, Flux ``linear1`` =
   3 x hidden + mlp) while a ``[1280, 1280, 3, 3]`` conv becomes ``[20, 20, 3, 3]``;
3. except the dimensions listed in :data:`DECISIVE_AXES` for the tensors that identify a family,
   which keep their real size: the UNet's ``conv_in``/``input_blocks.0.0.weight`` (in_channels),
   the cross-attention context dim (axis 1 of ``attn2.to_k/to_v`` in the first transformer block of
   each attention stack, and of the LoRA down matrices of those layers), the SDXL ``label_emb``/``add_embedding`` ADM dim, the UNet's ``time_embed`` input
   (model channels), text-encoder token and position embedding widths, text projections (projection width), MMDiT/Flux
   context, pooled and vector input widths, the SD3 ``pos_embed`` length, IP-Adapter image
   embedding width, VAE ``conv_in``/``quant_conv``.

``full=True`` skips shrinking: every tensor has its real shape (zero-filled, sparse on disk).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .layouts import Layout, TensorDecl

#: Tensors up to this many elements keep their real shape in tiny files.
KEEP_REAL_NUMEL = 16_384
#: Dimensions above this are divided by it in tiny files (and those at most this stay).
SHRINK_FACTOR = 64

#: (regex on the tensor name, axes that keep their real size; None = every axis).
DECISIVE_AXES: list[tuple[re.Pattern[str], tuple[int, ...] | None]] = [
    (re.compile(p), axes) for p, axes in [
        (r"(^|\.)input_blocks\.0\.0\.weight$", None),                 # UNet in_channels (4/5/8/9)
        (r"(^|\.)conv_in\.weight$", (1,)),                          # UNet/VAE/T2I input channels
        (r"(^|\.)(quant_conv|post_quant_conv)\.weight$", None),
        (r"(^|\.)input_hint_block\.0\.weight$", None),
        (r"transformer_blocks\.0\.attn2\.to_[kv]\.weight$", (1,)),  # cross-attention context dim
        (r"attn2[._]to_[kv]\.(lora_down|lora_A)\.weight$", (1,)),  # ... as LoRAs see it
        (r"attn2\.processor\.to_[kv]_lora\.down\.weight$", (1,)),
        (r"attn2_to_[kv]\.hada_w[12]_b$", (1,)),
        (r"(^|\.)label_emb\.0\.0\.weight$", (1,)),                  # SDXL ADM input (2816 / 2560)
        (r"(^|\.)add_embedding\.linear_1\.weight$", (1,)),          # same, diffusers names
        (r"(^|\.)time_embed\.0\.weight$", (1,)),                    # model channels (320 / 384)
        (r"(^|\.)time_embedding\.linear_1\.weight$", (1,)),
        (r"token_embedding\.weight$", (1,)),                        # text-encoder width
        (r"(^|\.)(shared|embed_tokens)\.weight$", (1,)),            # T5 width
        (r"position_embedding\.weight$", None),                     # 77 x text width
        (r"(^|\.)positional_embedding$", None),
        (r"(^|\.)text_projection$", (1,)),                          # open_clip [width, projection]
        (r"(^|\.)text_projection\.weight$", (0,)),                 # transformers [projection, width]
        (r"(^|\.)context_embedder\.weight$", (1,)),                 # SD3 T5 width
        (r"(^|\.)y_embedder\.mlp\.0\.weight$", (1,)),               # SD3 pooled width
        (r"(^|\.)txt_in\.weight$", (1,)),                           # Flux T5 width
        (r"(^|\.)vector_in\.in_layer\.weight$", (1,)),              # Flux CLIP pooled width
        (r"text_embedder\.linear_1\.weight$", (1,)),                # diffusers SD3/Flux pooled
        (r"(^|\.)pos_embed$", (1,)),                                # SD3 pos_embed_max_size**2
        (r"(^|\.)image_proj\.proj\.weight$", (1,)),                 # IP-Adapter image embed dim
        (r"(^|\.)ip_adapter\.1\.to_[kv]_ip\.weight$", (1,)),          # IP-Adapter context dim
    ]
]

SAFETENSORS_NUMPY = {"F16": "float16", "F32": "float32", "F64": "float64", "I64": "int64", "I32": "int32",
                     "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
TORCH_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
                "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
            "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


# --- shrinking ------------------------------------------------------------------------------------


def tiny_shape(name: str, decl: TensorDecl) -> tuple[int, ...]:
    """The shape a tensor gets in a tiny file (see the module docstring for the rule)."""
    if decl.numel <= KEEP_REAL_NUMEL:
        return decl.shape
    keep: set[int] = set()
    for pattern, axes in DECISIVE_AXES:
        if pattern.search(name):
            keep = set(range(len(decl.shape))) if axes is None else set(axes)
            break
    return tuple(d if (i in keep or d <= SHRINK_FACTOR) else max(1, d // SHRINK_FACTOR)
                 for i, d in enumerate(decl.shape))


def tiny_layout(layout: Mapping[str, TensorDecl]) -> Layout:
    """The layout with every shape shrunk by :func:`tiny_shape` (names and dtypes unchanged)."""
    return {name: TensorDecl(tiny_shape(name, decl), decl.dtype) for name, decl in layout.items()}


# --- values ---------------------------------------------------------------------------------------


def _ldm_schedule_values(n: int, start: float = 0.00085, end: float = 0.012) -> dict[str, np.ndarray]:
    betas = np.linspace(start ** 0.5, end ** 0.5, n, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    acp = np.cumprod(alphas)
    acp_prev = np.append(1.0, acp[:-1])
    posterior_variance = betas * (1.0 - acp_prev) / (1.0 - acp)
    return {
        "betas": betas, "alphas_cumprod": acp, "alphas_cumprod_prev": acp_prev,
        "sqrt_alphas_cumprod": np.sqrt(acp), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - acp),
        "log_one_minus_alphas_cumprod": np.log(1.0 - acp), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / acp),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / acp - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(acp_prev) / (1.0 - acp),
        "posterior_mean_coef2": (1.0 - acp_prev) * np.sqrt(alphas) / (1.0 - acp),
        "sigmas": np.sqrt((1.0 - acp) / acp),
    }


def tensor_value(name: str, shape: tuple[int, ...], dtype: str, *, seed: int = 0,
                 alpha: float = 1.0) -> np.ndarray:
    """Deterministic plausible values: schedule buffers and ``position_ids`` as the real ones,
    LoRA ``alpha`` scalars = ``alpha``, ``logit_scale`` = ln 100, weights ~ N(0, 0.02) seeded by name.

    Returns float32 for float dtypes (cast by the writer), the integer type otherwise.
    """
    last = name.rsplit(".", 1)[-1]
    if dtype in ("I64", "I32", "I16", "I8", "U8"):
        np_type = SAFETENSORS_NUMPY[dtype]
        if last == "position_ids":
            return np.arange(math.prod(shape), dtype=np_type).reshape(shape)
        if last == "num_updates":
            return np.full(shape, 1000, dtype=np_type)
        return np.zeros(shape, dtype=np_type)
    if dtype == "BOOL":
        return np.zeros(shape, dtype=bool)
    if len(shape) == 1 and shape[0] >= 2:
        schedule = _ldm_schedule_values(shape[0])
        if last in schedule:
            return schedule[last].astype(np.float32)
    if shape == () and last == "alpha":
        return np.array(alpha, dtype=np.float32)
    if shape == () and last == "logit_scale":
        return np.array(math.log(100.0), dtype=np.float32)
    if shape == () and last == "decay":
        return np.array(0.9999, dtype=np.float32)
    if last in ("weight", "scale") and len(shape) == 1:  # norms start at one
        return np.ones(shape, dtype=np.float32)
    rng = np.random.default_rng((zlib.crc32(name.encode()) << 8) ^ seed)
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)


def materialize(layout: Mapping[str, TensorDecl], *, seed: int = 0, alpha: float = 1.0,
                shrink: bool = True) -> dict[str, np.ndarray]:
    """name -> numpy array (float32 for every float dtype; cast at write time), shapes shrunk."""
    arrays: dict[str, np.ndarray] = {}
    for name, decl in layout.items():
        shape = tiny_shape(name, decl) if shrink else decl.shape
        arrays[name] = tensor_value(name, shape, decl.dtype, seed=seed, alpha=alpha)
    return arrays


def to_torch(layout: Mapping[str, TensorDecl], arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """numpy arrays -> torch tensors of the layout's dtypes (each with its own storage)."""
    import torch

    tensors: dict[str, Any] = {}
    for name, array in arrays.items():
        dtype = getattr(torch, TORCH_DTYPES[layout[name].dtype])
        tensors[name] = torch.from_numpy(np.array(array, order="C", copy=True)).to(dtype).clone()
    return tensors


# --- writers --------------------------------------------------------------------------------------


def _check_dest(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists")
    path.parent.mkdir(parents=True, exist_ok=True)


def write_safetensors(layout: Mapping[str, TensorDecl], path: str | Path, *, metadata: Mapping[str, str] | None = None,
                      seed: int = 0, alpha: float = 1.0, overwrite: bool = True) -> Path:
    """A tiny safetensors file with the layout's names, written by the ``safetensors`` library
    (``safetensors.numpy`` when numpy holds every dtype, ``safetensors.torch`` otherwise, e.g. BF16)."""
    path = Path(path)
    _check_dest(path, overwrite)
    arrays = materialize(layout, seed=seed, alpha=alpha)
    meta = dict(metadata) if metadata else None
    if all(decl.dtype in SAFETENSORS_NUMPY for decl in layout.values()):
        from safetensors.numpy import save_file as save_numpy

        # np.array keeps 0-dim scalars 0-dim (np.ascontiguousarray would make them [1])
        cast = {name: np.array(array, dtype=SAFETENSORS_NUMPY[layout[name].dtype], order="C", copy=True)
                for name, array in arrays.items()}
        save_numpy(cast, str(path), metadata=meta)
    else:
        from safetensors.torch import save_file as save_torch

        save_torch(to_torch(layout, arrays), str(path), metadata=meta)
    return path


def write_torch(payload: Any, path: str | Path, *, legacy: bool = False, overwrite: bool = True) -> Path:
    """``torch.save`` of ``payload`` (zip format, or the pre-1.6 legacy format with ``legacy``)."""
    import torch

    path = Path(path)
    _check_dest(path, overwrite)
    if legacy:
        torch.save(payload, str(path), _use_new_zipfile_serialization=False)
    else:
        torch.save(payload, str(path))
    return path


def write_torch_checkpoint(layout: Mapping[str, TensorDecl], path: str | Path, *, legacy: bool = False,
                           wrap: Callable[[dict[str, Any]], Any] | None = None, seed: int = 0,
                           alpha: float = 1.0, overwrite: bool = True) -> Path:
    """A tiny torch checkpoint: the flat state_dict, or ``wrap(state_dict)`` (e.g. a ``.ckpt``
    ``{"state_dict": ..., "global_step": N}`` or a nested IP-Adapter dict)."""
    tensors = to_torch(layout, materialize(layout, seed=seed, alpha=alpha))
    payload = wrap(tensors) if wrap is not None else tensors
    return write_torch(payload, path, legacy=legacy, overwrite=overwrite)


def safetensors_header(layout: Mapping[str, TensorDecl], metadata: Mapping[str, str] | None = None
                       ) -> tuple[bytes, int]:
    """(the 8-byte length + JSON header padded with spaces to a multiple of 8, data section size)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, decl in layout.items():
        if decl.dtype not in ITEMSIZE:
            raise ValueError(f"{name}: dtype {decl.dtype} has no fixed byte size")
        size = decl.numel * ITEMSIZE[decl.dtype]
        header[name] = {"dtype": decl.dtype, "shape": list(decl.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob, offset


def write_sparse_safetensors(layout_keys: Mapping[str, TensorDecl], path: str | Path,
                             metadata: Mapping[str, str] | None = None, *, overwrite: bool = True) -> Path:
    """A full-size, zero-filled safetensors file: the header, then ``truncate`` to the full length
    so the data section is a hole (a few KiB on disk for a multi-GB checkpoint on sparse-capable
    filesystems). Every name, shape and dtype is exactly the layout's."""
    path = Path(path)
    _check_dest(path, overwrite)
    head, data_size = safetensors_header(layout_keys, metadata)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(head)
            handle.truncate(len(head) + data_size)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
