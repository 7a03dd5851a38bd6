"""The user's registry lock file: ``add`` and ``import`` hold it shared, ``gc`` exclusive, so that gc
never removes a blob that a running add has written but not yet indexed."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; gc's grace period is the protection there
    fcntl = None  # type: ignore[assignment]


class RegistryLock:
    """A reentrant shared/exclusive ``flock`` on ``path`` (per process; threads share it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._depth = 0
        self._mode = ""
        self._mutex = threading.RLock()

    @contextlib.contextmanager
    def _held(self, mode: str) -> Iterator[None]:
        with self._mutex:
            if self._depth and (self._mode == "exclusive" or mode == self._mode):
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            if self._depth:
                raise RuntimeError("cannot upgrade a shared registry lock to exclusive")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX if mode == "exclusive" else fcntl.LOCK_SH)
                self._fd, self._depth, self._mode = fd, 1, mode
                try:
                    yield
                finally:
                    self._depth = 0
                    self._fd = None
            finally:
                os.close(fd)  # closing releases the flock

    def shared(self) -> contextlib.AbstractContextManager[None]:
        return self._held("shared")

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return self._held("exclusive")
