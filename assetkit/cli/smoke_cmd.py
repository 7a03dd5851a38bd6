"""``assetkit smoke PATH_OR_NAME``: the smoke generation check for one model."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import handles_errors, json_option
from .check_cmd import DEVICE, HUB, JUNIT, REPORT, print_result


@click.command("smoke")
@click.argument("model")
@DEVICE
@click.option("--steps", type=click.IntRange(1, 1000), default=4, show_default=True, help="Denoising steps.")
@click.option("--size", type=click.IntRange(8, 4096), default=None, help="Image height and width (default 64).")
@JUNIT
@REPORT
@HUB
@json_option
@handles_errors
def command(model: str, device: str, steps: int, size: int | None, junit: Path | None, report_dir: Path | None,
            hub: bool, json_output: bool) -> None:
    """Assemble MODEL (a diffusers folder, a single file or a registry name) and run the smoke
    checks: finite latents at every step, a real image, determinism. Exit 0 pass, 1 problems."""
    from ..pipeline.gate import smoke_one

    if size is not None and size % 8:
        raise click.BadParameter(f"must be a multiple of 8, not {size}", param_hint="--size")
    print_result(smoke_one(model, device=device, steps=steps, size=size, report_dir=report_dir, junit=junit,
                           hub=hub),
                 json_output)
