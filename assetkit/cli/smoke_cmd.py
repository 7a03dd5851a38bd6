"""``assetkit smoke PATH_OR_NAME``: the smoke generation check for one model."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import handles_errors, json_option
from .check_cmd import DEVICE, HUB, JUNIT, REPORT, print_result


@click.command("smoke")
@click.argument("model")
@DEVICE
@click.option("--steps", type=int, default=4, show_default=True, help="Denoising steps (1 to 1000).")
@click.option("--size", type=int, default=None,
              help="Image height and width (default 64; a multiple of 8, at most 4096).")
@click.option("--config", "config_dir", type=click.Path(path_type=Path), default=None,
              help="A single file's own diffusers configs (a diffusers folder, or its configs only) instead of "
                   "the catalogue's.")
@JUNIT
@REPORT
@HUB
@json_option
@handles_errors
def command(model: str, device: str, steps: int, size: int | None, config_dir: Path | None, junit: Path | None,
            report_dir: Path | None, hub: bool, json_output: bool) -> None:
    """Assemble MODEL (a diffusers folder, a single file or a registry name) and run the smoke
    checks: finite latents at every step, a real image, determinism. Exit 0 pass, 1 problems."""
    from ..pipeline.gate import smoke_one

    # --steps and --size are checked against the spec's limits (one table), as one line, exit 2
    print_result(smoke_one(model, device=device, steps=steps, size=size, report_dir=report_dir, junit=junit,
                           hub=hub, config=config_dir),
                 json_output)
