"""``convert --prune / --keep-ema / --ema / --fix-position-ids``: a plan of which tensors to keep,
which to rename and which get replacement bytes, applied to the normal streaming conversion.

The plan is an ``edit`` of the selected tensors (name -> :class:`TensorInfo`) that
:func:`~assetkit.convert.to_safetensors.convert_file` applies before it fixes the output: dropped
names vanish, EMA tensors take the model's names, and a fixed ``position_ids`` buffer points at a
tiny safetensors file holding ``0..N-1`` in the buffer's own dtype and shape, so the copy and the
verification read it like any other source tensor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AssetkitError
from ..formats.base import TensorInfo


@dataclass
class HygienePlan:
    """What the edit does; :meth:`to_dict` goes into the ``--json`` report."""

    dropped_ema: list[str] = field(default_factory=list)
    dropped_junk: list[str] = field(default_factory=list)
    replaced_by_ema: dict[str, str] = field(default_factory=dict)  #: model name -> EMA tensor written there
    fixed_position_ids: dict[str, str] = field(default_factory=dict)  #: name -> what was wrong
    dropped_bytes: int = 0
    ema_uncovered: list[str] = field(default_factory=list)  #: model weights with no EMA copy (--ema keeps them)
    ema_other_dtype: list[str] = field(default_factory=list)  #: EMA tensors whose dtype differs from the model's

    def to_dict(self) -> dict[str, Any]:
        return {"dropped_ema": len(self.dropped_ema), "dropped_junk": list(self.dropped_junk),
                "ema_as_model": len(self.replaced_by_ema), "fixed_position_ids": dict(self.fixed_position_ids),
                "dropped_bytes": self.dropped_bytes, "ema_uncovered": len(self.ema_uncovered),
                "ema_other_dtype": list(self.ema_other_dtype)}

    def summary(self) -> str:
        parts = []
        if self.replaced_by_ema:
            parts.append(f"EMA weights written as the model ({len(self.replaced_by_ema)} tensors)")
            if self.ema_uncovered:
                total = len(self.replaced_by_ema) + len(self.ema_uncovered)
                parts.append(f"the EMA covers {len(self.replaced_by_ema)} of {total} model weights: the other "
                             f"{len(self.ema_uncovered)} keep their non-EMA values (e.g. {self.ema_uncovered[0]})")
            if self.ema_other_dtype:
                parts.append(f"{len(self.ema_other_dtype)} EMA tensor(s) in another dtype than the model's, written "
                             f"as they are (e.g. {self.ema_other_dtype[0]})")
        if self.dropped_ema:
            parts.append(f"dropped {len(self.dropped_ema)} EMA tensors")
        if self.dropped_junk:
            parts.append(f"dropped {len(self.dropped_junk)} junk tensors")
        if self.fixed_position_ids:
            parts.append(f"position_ids rewritten as 0..N-1 in {', '.join(self.fixed_position_ids)}")
        return "; ".join(parts) or "nothing to change"


def _position_ids_bytes(info: TensorInfo) -> bytes:
    import numpy as np

    from ..formats.dtypes import DTYPES

    n = info.shape[-1] if info.shape else 0
    row = DTYPES[info.dtype]
    if info.dtype == "BF16":
        ids = (np.arange(n, dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
    elif row.numpy_name:
        ids = np.arange(n).astype(np.dtype(row.numpy_name).newbyteorder("<"))
    else:
        raise AssetkitError(f"cannot write position ids as {info.dtype}", where=info.name)
    return ids.tobytes()


def check_hygiene_options(*, prune: bool = False, keep_ema: bool = False, ema: bool = False,
                          fix_position_ids: bool = False) -> None:
    """Refuse combinations that make no sense, before any file is read: ``--keep-ema`` without
    ``--prune``, ``--keep-ema`` with ``--ema`` (takes the whole option set, ``fix_position_ids``
    included, so that one dict serves :func:`hygiene_edit` and batches)."""
    if keep_ema and not prune:
        raise AssetkitError("--keep-ema goes with --prune")
    if keep_ema and ema:
        raise AssetkitError("--keep-ema and --ema contradict each other")


@contextlib.contextmanager
def hygiene_edit(src: str | os.PathLike[str], *, prune: bool = False, keep_ema: bool = False,
                 ema: bool = False, fix_position_ids: bool = False) -> Iterator[tuple[Any, HygienePlan]]:
    """``(edit, plan)`` for :func:`convert_file`'s ``edit``; ``plan`` is filled when the edit runs.

    Raises :class:`AssetkitError` for ``--ema`` without EMA weights and for ``--keep-ema`` without
    ``--prune``. The replacement file lives in a temporary folder removed on exit.
    """
    from ..check import hygiene_report
    from ..check.hygiene import EMA_SOURCE_PREFIX, SCHEDULE_BUFFERS
    from ..formats.base import Asset
    from ..formats.safetensors import read_safetensors
    from ..formats.safetensors_writer import SafetensorsWriter, TensorSpec

    check_hygiene_options(prune=prune, keep_ema=keep_ema, ema=ema)
    plan = HygienePlan()
    scratch = Path(tempfile.mkdtemp(prefix="assetkit-hygiene-"))
    opened: list[Asset] = []

    def edit(selected: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
        view = Asset(path=Path(src), format="edit", tensors=dict(selected))
        try:
            found = hygiene_report(view)
        finally:
            view.close()
        out = dict(selected)
        if ema:
            if not found.ema:
                raise AssetkitError("--ema: this checkpoint holds no EMA weights (model_ema.*)", where=str(src))
            for ema_name, model_name in found.ema.items():
                if out[model_name].shape != out[ema_name].shape:
                    raise AssetkitError(f"--ema: {ema_name} has shape {list(out[ema_name].shape)}, the model's "
                                        f"{model_name} {list(out[model_name].shape)}", where=str(src))
                if out[ema_name].dtype != out[model_name].dtype:
                    plan.ema_other_dtype.append(ema_name)
                out[model_name] = out.pop(ema_name)
                plan.replaced_by_ema[model_name] = ema_name
            covered = set(found.ema.values())
            plan.ema_uncovered = [n for n in selected if n.startswith(EMA_SOURCE_PREFIX) and n not in covered
                                  and n not in SCHEDULE_BUFFERS]
            for name in found.ema_orphans + found.ema_bookkeeping:
                plan.dropped_ema.append(name)
                plan.dropped_bytes += out.pop(name).nbytes
        elif prune and not keep_ema:
            for name in list(found.ema) + found.ema_orphans + found.ema_bookkeeping:
                plan.dropped_ema.append(name)
                plan.dropped_bytes += out.pop(name).nbytes
        if prune:
            for name in found.junk:
                plan.dropped_junk.append(name)
                plan.dropped_bytes += out.pop(name).nbytes
        if fix_position_ids and found.broken_position_ids:
            specs, data = [], []
            for name in found.broken_position_ids:
                if name not in out:
                    continue
                info = out[name]
                specs.append(TensorSpec(name, info.dtype, tuple(info.shape)))
                data.append(_position_ids_bytes(info))
            fixed_file = scratch / f"position_ids_{len(opened)}.safetensors"
            with SafetensorsWriter(fixed_file, specs) as writer:
                for chunk in data:
                    writer.write(chunk)
            fixed = read_safetensors(fixed_file)
            opened.append(fixed)
            for spec in specs:
                out[spec.name] = fixed.tensors[spec.name]
                plan.fixed_position_ids[spec.name] = found.broken_position_ids[spec.name]
        return out

    try:
        yield edit, plan
    finally:
        for asset in opened:
            asset.close()
        shutil.rmtree(scratch, ignore_errors=True)


def hygiene_requested(*, prune: bool, keep_ema: bool, ema: bool, fix_position_ids: bool) -> bool:
    return prune or keep_ema or ema or fix_position_ids
