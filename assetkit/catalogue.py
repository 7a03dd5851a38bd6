"""Loader for the bundled catalogue in ``registry/`` (families, kinds, signatures, configs).

The catalogue is data: what assetkit knows out of the box. It is found at ``$ASSETKIT_CATALOGUE``,
else inside the installed package (``assetkit/_catalogue``, where a wheel puts ``registry/``),
else in the ``registry/`` folder of the checkout (source and editable installs).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any


def catalogue_dir() -> Path:
    override = os.environ.get("ASSETKIT_CATALOGUE")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    packaged = here / "_catalogue"
    return packaged if packaged.is_dir() else here.parent / "registry"


@functools.cache
def load(relative: str) -> Any:
    """Parse ``registry/<relative>`` (YAML or JSON), cached."""
    path = catalogue_dir() / relative
    with open(path, encoding="utf-8") as fh:
        if path.suffix == ".json":
            return json.load(fh)
        import yaml  # only when a YAML file is asked for: importing it costs ~10 ms per process

        return yaml.safe_load(fh)
