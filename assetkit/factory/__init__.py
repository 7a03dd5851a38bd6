"""Fixture factory: tiny checkpoints with the real tensor names of every family and kind.

Used by the tests of every layer and by ``assetkit demo``. Three sources of truth for names:

* the shared layouts (``../shared/layouts/*.json``, read at runtime: :func:`load_shared_layout`),
* generators rebuilt from the reference architectures (:mod:`.keys`, checked against the shared
  layouts and against diffusers/transformers),
* diffusers/transformers classes instantiated on the meta device (:mod:`.diffusers_keys`) and
  tiny diffusers pipelines saved by diffusers itself (:mod:`.diffusers_models`).

Files are written by the real libraries (``safetensors``, ``torch.save``), so assetkit's readers
are tested against independent writers. Importing this package does not import torch.

Typical use::

    from assetkit.factory import FIXTURES, make_fixture
    path = make_fixture("sd15", tmp_path, "torch-zip")       # tiny .ckpt, real names
    FIXTURES["sd15"].expected.verdict()                       # ('pipeline', 'sd1', None, None, 'original')
    make_fixture("sdxl_base", tmp_path, full=True)            # 6.9 GB sparse, a few KiB on disk
"""

from __future__ import annotations

from .layouts import (
    Layout,
    TensorDecl,
    available_shared_layouts,
    default_layouts_dir,
    load_shared_layout,
)
from .specs import CONTAINERS, FIXTURES, Expected, FixtureSpec, fixture_ids, make_fixture
from .writers import (
    materialize,
    tiny_layout,
    tiny_shape,
    write_safetensors,
    write_sparse_safetensors,
    write_torch,
    write_torch_checkpoint,
)

__all__ = [
    "CONTAINERS", "FIXTURES", "Expected", "FixtureSpec", "Layout", "TensorDecl", "available_shared_layouts",
    "default_layouts_dir", "fixture_ids", "load_shared_layout", "make_fixture", "materialize", "tiny_layout",
    "tiny_shape", "write_safetensors", "write_sparse_safetensors", "write_torch", "write_torch_checkpoint",
]
