"""The lazy index every reader produces: :class:`TensorInfo` per tensor, :class:`Asset` per path.

Opening an asset reads headers only. Tensor bytes are fetched on demand, one tensor at a time,
through :meth:`Asset.tensor_bytes`, by offset into a memory map of the file that holds them.
"""

from __future__ import annotations

import contextlib
import math
import mmap
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dtypes import DTYPES, nbytes_for

if TYPE_CHECKING:  # numpy is imported where arrays are built: commands that only read headers start faster
    import numpy as np

#: Format ids an :class:`Asset` can have.
FORMATS = ("safetensors", "torch-zip", "torch-legacy", "diffusers", "diffusers-component")


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and what it looks like, without its data.

    For safetensors, ``data_offset`` is the absolute offset of the tensor's first byte and the
    tensor is contiguous. For torch pickles, ``data_offset`` is the absolute offset of the start
    of the *storage* record the tensor views, ``storage_offset`` (in elements) and ``stride``
    locate the view inside it; ``data_offset`` is None when the record is not addressable in place
    (a compressed zip member): :meth:`Asset.tensor_bytes` then raises.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    data_offset: int | None
    storage_key: str | None = None
    storage_nbytes: int | None = None
    storage_offset: int = 0
    stride: tuple[int, ...] | None = None
    byteorder: str = "little"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return nbytes_for(self.dtype, self.numel)

    @property
    def contiguous_stride(self) -> tuple[int, ...]:
        strides, acc = [], 1
        for dim in reversed(self.shape):
            strides.append(acc)
            acc *= max(dim, 1)
        return tuple(reversed(strides))

    @property
    def is_contiguous(self) -> bool:
        """True when the bytes are one C-ordered run (size-1 and empty dims ignore their stride)."""
        if self.stride is None or self.numel == 0:
            return True
        return all(
            dim == 1 or got == want
            for dim, got, want in zip(self.shape, self.stride, self.contiguous_stride, strict=True)
        )

    @property
    def last_element(self) -> int:
        """Index, in elements of its storage, of the view's last element (for bounds checks of a
        non-empty tensor)."""
        stride = self.stride or self.contiguous_stride
        return self.storage_offset + sum((dim - 1) * step for dim, step in zip(self.shape, stride, strict=True))

    @property
    def view_key(self) -> tuple:
        """Two tensors with equal ``view_key`` are the very same view of one storage (tied weights)."""
        return (str(self.file), self.storage_key, self.storage_offset, self.shape, self.stride, self.dtype)


def count_parameters(infos: Iterable[TensorInfo]) -> int:
    return sum(info.numel for info in infos)


def count_bytes(infos: Iterable[TensorInfo]) -> int:
    return sum(info.nbytes for info in infos)


def count_dtypes(infos: Iterable[TensorInfo]) -> dict[str, int]:
    """dtype id -> number of tensors, sorted by dtype id."""
    return dict(sorted(Counter(info.dtype for info in infos).items()))


@dataclass
class Asset:
    """A checkpoint file or diffusers folder, opened lazily.

    ``tensors`` maps name -> :class:`TensorInfo`. For a diffusers pipeline folder the names are
    ``component/tensor.name`` and ``components`` holds each component as its own Asset.
    ``metadata`` holds safetensors ``__metadata__`` (strings) or the plain values of a pickle
    (``global_step``, ``epoch``...). ``configs`` maps a relative path (``model_index.json``,
    ``unet/config.json``) to its parsed JSON. ``unknown_globals`` lists ``module.name`` of every
    pickle global that is not on the reader's allowlist (never imported).
    """

    path: Path
    format: str
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    configs: dict[str, Any] = field(default_factory=dict)
    unknown_globals: list[str] = field(default_factory=list)
    components: dict[str, Asset] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unwrapped_key: str | None = None
    #: a pickle's top-level dict keys, as written (``state_dict``, ``global_step``...); empty otherwise
    top_level_keys: list[str] = field(default_factory=list)
    #: files and folders the layout names but that are absent (a shard, a listed component folder)
    missing: list[Path] = field(default_factory=list)
    _maps: dict[Path, mmap.mmap] = field(default_factory=dict, repr=False, compare=False)

    # ---- summaries -------------------------------------------------------------------------
    @property
    def parameters(self) -> int:
        return count_parameters(self.tensors.values())

    @property
    def nbytes(self) -> int:
        return count_bytes(self.tensors.values())

    def dtype_counts(self) -> dict[str, int]:
        return count_dtypes(self.tensors.values())

    # ---- data access -----------------------------------------------------------------------
    def _map(self, file: Path) -> mmap.mmap:
        mapped = self._maps.get(file)
        if mapped is None:
            with open(file, "rb") as fh:
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[file] = mapped
        return mapped

    def tensor_bytes(self, name: str) -> memoryview | bytes:
        """The tensor's data as C-ordered little-endian bytes (a zero-copy view when possible)."""
        return read_tensor_bytes(self.tensors[name], self._map)

    def tensor_array(self, name: str) -> np.ndarray:
        """The tensor as a numpy array (bf16 and fp8 come back as same-size unsigned ints)."""
        import numpy as np

        info = self.tensors[name]
        row = DTYPES[info.dtype]
        np_dtype = np.dtype(row.numpy_name) if row.numpy_name else np.dtype(f"u{row.itemsize}")
        return np.frombuffer(self.tensor_bytes(name), dtype=np_dtype).reshape(info.shape)

    def close(self) -> None:
        for mapped in self._maps.values():
            with contextlib.suppress(BufferError):  # a caller still holds a view; it closes with it
                mapped.close()
        self._maps.clear()
        for component in self.components.values():
            component.close()

    def __enter__(self) -> Asset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_tensor_bytes(info: TensorInfo, get_map: Callable[[Path], mmap.mmap]) -> memoryview | bytes:
    """Fetch one tensor's bytes through ``get_map(file) -> mmap``; see :meth:`Asset.tensor_bytes`."""
    from ..errors import FormatError

    if info.data_offset is None:
        raise FormatError("tensor data is not stored in place (compressed record)", where=info.name)
    row = DTYPES[info.dtype]
    buf = memoryview(get_map(info.file))
    if info.numel == 0:
        return b""
    simple = info.is_contiguous and (info.byteorder == "little" or row.itemsize == 1 or row.bits < 8)
    if simple:
        start = info.data_offset + (info.storage_offset * row.bits) // 8
        end = start + info.nbytes
        if end > len(buf) or (info.storage_nbytes is not None and end > info.data_offset + info.storage_nbytes):
            raise FormatError("tensor data runs past the end of its storage", where=info.name)
        return buf[start:end]
    if row.bits < 8:
        raise FormatError("strided views of sub-byte dtypes are not supported", where=info.name)
    # General case: a strided (and/or big-endian) view into its storage, materialised alone.
    import numpy as np

    item = row.itemsize
    storage_nbytes = info.storage_nbytes if info.storage_nbytes is not None else len(buf) - info.data_offset
    storage_len = storage_nbytes // item
    stride = info.stride or info.contiguous_stride
    if info.storage_offset < 0 or any(s < 0 for s in stride) or info.last_element >= storage_len:
        raise FormatError("tensor view reaches outside its storage", where=info.name)
    endian = "<" if info.byteorder == "little" else ">"
    unit = np.dtype(f"{endian}u{item}") if item in (1, 2, 4, 8) else np.dtype((np.void, item))
    storage = np.frombuffer(buf[info.data_offset : info.data_offset + storage_len * item], dtype=unit)
    view = np.lib.stride_tricks.as_strided(
        storage[info.storage_offset :], shape=info.shape, strides=[s * item for s in stride], writeable=False
    )
    out = np.ascontiguousarray(view)
    if info.byteorder != "little":
        # Swap each scalar: a complex number is two floats, each stored big-endian on its own.
        scalar = item // 2 if row.kind == "complex" else item
        out = out.reshape(-1).view(f">u{scalar}").astype(f"<u{scalar}")
    return out.tobytes()
