"""``assetkit convert``: checkpoints to safetensors without running the pickle, verified."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import AssetkitError, UnsafeInputError
from ._common import EXIT_OK, EXIT_PROBLEMS, finish, handles_errors, human_bytes, json_option


def _parse_metadata(values: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--metadata")
        parsed[key] = value
    return parsed


class _ByteProgress:
    """A progress bar in bytes on stderr, only on a terminal (stdout and stderr) and not with --json."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled = enabled and sys.stderr.isatty() and sys.stdout.isatty()
        self.label = label
        self._bar: Any = None

    def start(self, total: int) -> None:
        if self.enabled and total:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr,
                                          show_pos=False, show_percent=True, show_eta=True)
            self._bar.__enter__()

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.update(nbytes)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _print_report(report: Any) -> None:
    changes = ", ".join(f"{k} x{v}" for k, v in report.dtype_changes.items())
    click.echo(f"{report.src} -> {report.dst}")
    click.echo(f"  {report.tensors} tensors, {human_bytes(report.bytes)} of tensor data"
               f"{', cast ' + changes if changes else ''} in {report.seconds:.2f} s")
    if report.tied:
        click.echo(f"  {len(report.tied)} tied name(s) stored once, recorded in metadata: "
                   + ", ".join(f"{a} -> {k}" for a, k in list(report.tied.items())[:5])
                   + (" ..." if len(report.tied) > 5 else ""))
    if report.materialized:
        click.echo(f"  {len(report.materialized)} strided/big-endian tensor(s) made contiguous")
    click.echo(f"  source sha256 {report.source_sha256}")
    click.echo("  verified: every tensor re-read and equal to the source" if report.verified
               else "  not verified (--no-verify)")


def _print_batch(batch: Any) -> None:
    for item in batch.items:
        line = f"{item.status:<9} {item.src}"
        if item.dst is not None and item.status == "converted":
            line += f" -> {item.dst}"
        if item.error:
            line += f": {item.error}"
        click.echo(line)
        if item.hygiene is not None and item.status == "converted":
            click.echo(f"          hygiene: {item.hygiene.summary()}")
        for finding in item.findings:
            if finding.failing:
                click.echo(f"          {finding.to_text()}")
    for path in batch.extra_files:
        click.echo(f"index     {path}")
    s = batch.summary()
    click.echo(f"{s['files']} file(s): {s['converted']} converted, {s['unsafe']} unsafe, {s['failed']} failed, "
               f"{s['skipped']} skipped; {human_bytes(s['bytes'])} in {s['seconds']:.2f} s")
    if not s["files"]:
        click.echo("assetkit: error: nothing to convert: no .ckpt/.pt/.pth/.bin file found (.safetensors files are "
                   "rewritten only with --dtype/--only/--strip-prefix/--state-dict-key/--prune/--ema/--fix-position-ids; "
                   "a diffusers folder takes --variant)", err=True)


@click.command("convert")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path), required=False)
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), help="Cast floating tensors (ints and bools keep their dtype).")
@click.option("--variant", help="Diffusers folder: write *.<variant>.safetensors beside the weights (e.g. fp16).")
@click.option("--state-dict-key", help="Take the tensors under this top-level key (e.g. state_dict, model).")
@click.option("--only", "only", metavar="PREFIX", help="Keep tensors whose name starts with PREFIX (e.g. first_stage_model.).")
@click.option("--strip-prefix", metavar="PREFIX", help="Remove PREFIX from tensor names.")
@click.option("--keep-metadata", is_flag=True, help="Carry the source's plain values (global_step, epoch...) or safetensors metadata into the "
                   "output as strings (a whole safetensors source keeps its metadata anyway).")
@click.option("--metadata", "metadata_items", multiple=True, metavar="KEY=VALUE", help="Set a metadata entry (repeatable).")
@click.option("--salvage", is_flag=True, help="Unsafe pickle: keep its tensors only, drop every other object (nothing is run).")
@click.option("--no-verify", is_flag=True, help="Skip re-reading the output and comparing every tensor with the source.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--to", "to", type=click.Choice(["diffusers", "single-file", "kohya"]),
              help="Change the layout: single file -> diffusers folder, or a folder (or file) -> one single file; "
                   "a LoRA -> peft (diffusers) or kohya naming.")
@click.option("--family", help="--to: the family when the file cannot tell (e.g. sdxl for a VAE or a LoRA).")
@click.option("--config", "config_dir", type=click.Path(path_type=Path, file_okay=False),
              help="--to diffusers: use this folder's configs instead of the catalogue's (a LoRA: its module names).")
@click.option("--drop-extras", is_flag=True, help="--to diffusers: write no sidecar for tensors diffusers has no place for.")
@click.option("--component", help="--to: convert or extract only this component (unet, vae, text_encoder...).")
@click.option("--replace", "replace", multiple=True, metavar="COMPONENT=PATH",
              help="--to single-file: swap in another component (e.g. vae=vae.safetensors), shapes checked first.")
@click.option("--kohya-unet", type=click.Choice(["diffusers", "sgm"]), help="LoRA --to kohya: UNet names down_blocks_* or input_blocks_* (default: as recorded, sgm for SDXL).")
@click.option("--prune", is_flag=True, help="Drop EMA copies and junk keys (see inspect's findings).")
@click.option("--keep-ema", is_flag=True, help="With --prune: keep the EMA copies.")
@click.option("--ema", "use_ema", is_flag=True, help="Write the EMA weights as the model (drops the non-EMA copies).")
@click.option("--fix-position-ids", is_flag=True, help="Rewrite broken CLIP position_ids as 0..N-1 (changes outputs slightly).")
@json_option
@handles_errors
def command(source: Path, output: Path | None, dtype: str | None, variant: str | None, state_dict_key: str | None,
            only: str | None, strip_prefix: str | None, keep_metadata: bool, metadata_items: tuple[str, ...],
            salvage: bool, no_verify: bool, overwrite: bool, to: str | None, family: str | None,
            config_dir: Path | None, drop_extras: bool, component: str | None, replace: tuple[str, ...],
            json_output: bool, kohya_unet: str | None = None, prune: bool = False, keep_ema: bool = False,
            use_ema: bool = False, fix_position_ids: bool = False) -> None:
    """Convert SOURCE to safetensors, streaming, exact, without running any pickle.

    \b
    assetkit convert model.ckpt model.safetensors          one file (OUTPUT defaults to SOURCE.safetensors)
    assetkit convert sd.ckpt vae.safetensors --only first_stage_model. --strip-prefix first_stage_model.
    assetkit convert in.safetensors out.safetensors --dtype fp16
    assetkit convert SRC_DIR DST_DIR                       every .ckpt/.pt/.pth/.bin below SRC_DIR
    assetkit convert PIPELINE_DIR --variant fp16           diffusers *.fp16.safetensors beside the weights
    assetkit convert sd15.safetensors out/ --to diffusers  single file -> diffusers folder (and back: --to single-file)

    Unsafe pickles are refused (exit 1) with the scan findings. The output is re-read and every
    tensor compared with the source unless --no-verify. Exit codes: 0 ok, 1 unsafe input or
    verification failed, 2 usage error or unreadable input.
    """
    from ..convert import ConvertOptions
    from ..convert.batch import convert_tree, convert_variant_folder
    from ..convert.to_safetensors import convert_file

    given = {"--dtype": dtype, "--variant": variant, "--state-dict-key": state_dict_key, "--only": only,
             "--strip-prefix": strip_prefix, "--keep-metadata": keep_metadata, "--metadata": metadata_items,
             "--salvage": salvage, "--family": family, "--config": config_dir, "--drop-extras": drop_extras,
             "--component": component, "--replace": replace, "--kohya-unet": kohya_unet, "--prune": prune,
             "--keep-ema": keep_ema, "--ema": use_ema, "--fix-position-ids": fix_position_ids}
    lora = to == "kohya" or (to == "diffusers" and _is_lora(source))
    if lora:
        lora_options = ("--family", "--config", *(("--kohya-unet",) if to == "kohya" else ()))
        _refuse_options(given, *lora_options, hint=f"to a LoRA --to {to} (it takes {', '.join(lora_options)}, "
                                                   "--overwrite, --no-verify)")
    elif to is not None:
        _refuse_options(given, "--dtype", "--variant", "--family", "--config", "--drop-extras", "--component",
                        "--replace", hint=f"with --to {to}; run a plain `assetkit convert IN OUT ...` first for them")
    else:
        _refuse_options(given, *(k for k in given if k not in _LAYOUT_ONLY), hint="without --to")
    if lora:
        _convert_lora(source, output, to, family=family, config=config_dir, kohya_unet=kohya_unet,
                      overwrite=overwrite, verify=not no_verify, json_output=json_output)
        return
    if to is not None:
        _convert_layout(source, output, to, dtype=dtype, variant=variant, family=family, config_dir=config_dir,
                        drop_extras=drop_extras, component=component, replace=replace, overwrite=overwrite,
                        json_output=json_output)
        return
    extra = _parse_metadata(metadata_items)
    verify = not no_verify
    hygiene = {"prune": prune, "keep_ema": keep_ema, "ema": use_ema, "fix_position_ids": fix_position_ids}
    options = ConvertOptions(dtype=dtype, only=only, strip_prefix=strip_prefix, state_dict_key=state_dict_key,
                             keep_metadata=keep_metadata, metadata=extra, salvage=salvage, verify=verify,
                             overwrite=overwrite)
    if variant is not None:
        if not source.is_dir():
            raise AssetkitError("--variant needs a diffusers folder", where=str(source))
        if output is not None:
            raise AssetkitError("--variant writes beside the weights: give no OUTPUT")
        if only or strip_prefix or state_dict_key or extra or salvage or any(hygiene.values()):
            raise AssetkitError("--variant takes only --dtype, --overwrite and --no-verify")
        bar = _ByteProgress(not json_output, f"{variant}")
        try:
            batch = convert_variant_folder(source, variant, dtype=dtype, overwrite=overwrite, verify=verify,
                                           on_start=bar.start, progress=bar.advance)
        finally:
            bar.finish()
        _finish_batch(batch, json_output)
        return
    if source.is_dir():
        if output is None:
            raise AssetkitError("converting a folder needs an OUTPUT folder (or --variant for a diffusers folder)",
                                where=str(source))
        bar = _ByteProgress(not json_output, "converting")
        try:
            batch = convert_tree(source, output, on_start=bar.start, progress=bar.advance, options=options,
                                 hygiene=hygiene)
        finally:
            bar.finish()
        _finish_batch(batch, json_output)
        return
    if output is None:
        if source.suffix.lower() == ".safetensors":
            raise AssetkitError("give an OUTPUT path: the input already is a .safetensors file", where=str(source))
        output = source.with_suffix(".safetensors")
    bar = _ByteProgress(not json_output, "converting")
    with _hygiene(source, hygiene) as (edit, cleaned):
        try:
            report = convert_file(source, output, options=options,
                                  warn=lambda line: click.echo(f"assetkit: warning: {line}", err=True),
                                  on_start=bar.start, progress=bar.advance, edit=edit)
        except UnsafeInputError as exc:
            _refuse_unsafe(exc, json_output)
            return
        finally:
            bar.finish()

    def render(_document: object) -> None:
        _print_report(report)
        if cleaned:
            click.echo(f"  hygiene: {cleaned.summary()}")

    finish({"ok": True, **report.to_dict(), **({"hygiene": cleaned.to_dict()} if cleaned else {})},
           json_output=json_output, render=render)


#: Options that only a layout or LoRA conversion (--to) reads.
_LAYOUT_ONLY = ("--family", "--config", "--drop-extras", "--component", "--replace", "--kohya-unet")


def _refuse_options(given: dict[str, Any], *allowed: str, hint: str) -> None:
    """A usage error naming the options given that this kind of conversion would ignore."""
    ignored = [name for name, value in given.items() if value and name not in allowed]
    if ignored:
        raise AssetkitError(f"{', '.join(ignored)}: not applicable {hint}")


@contextlib.contextmanager
def _hygiene(source: Path, options: dict[str, bool]) -> Iterator[tuple[Any, Any]]:
    """``(edit, plan)`` of --prune/--keep-ema/--ema/--fix-position-ids, or ``(None, None)``."""
    if not any(options.values()):
        yield None, None
        return
    from ..convert import hygiene_edit

    with hygiene_edit(source, **options) as pair:
        yield pair


def _is_lora(source: Path) -> bool:
    """A LoRA file (kohya or peft names): ``--to diffusers`` then means its naming, not a folder."""
    from ..convert.lora_formats import names_format

    return names_format(source) != "unknown"


def _convert_lora(source: Path, output: Path | None, to: str, *, json_output: bool, **options: Any) -> None:
    from ..convert import convert_lora

    if output is None:
        raise AssetkitError("give an OUTPUT path for the converted LoRA", where=str(source))
    report = convert_lora(source, output, to=to, family=options["family"], config=options["config"],
                          unet_spelling=options["kohya_unet"], overwrite=options["overwrite"], verify=options["verify"])
    finish({"ok": True, **report.to_dict()}, json_output=json_output, render=lambda _: _print_lora_report(report))


def _print_lora_report(report: Any) -> None:
    click.echo(f"{report.src} -> {report.dst}  ({report.source_format} -> {report.target_format})")
    click.echo(f"  {sum(report.modules.values())} modules (" + ", ".join(f"{k} {v}" for k, v in report.modules.items())
               + f"), ranks {sorted(report.ranks)}, alphas {sorted(report.alphas)}, {report.tensors} tensors"
               + (", DoRA magnitudes carried" if report.dora else ""))
    click.echo("  verified: every tensor re-read and equal to the source" if report.verified
               else "  not verified (--no-verify)")


def _convert_layout(source: Path, output: Path | None, to: str, *, json_output: bool, dtype: str | None,
                    **options: Any) -> None:
    from ..convert.layout_convert import convert_layout
    from ..convert.to_safetensors import resolve_dtype

    if output is None:
        raise AssetkitError(f"--to {to} needs an OUTPUT path")
    try:
        summary = convert_layout(source, output, to=to, dtype=resolve_dtype(dtype), **options)
    except UnsafeInputError as exc:
        _refuse_unsafe(exc, json_output)
        return
    finish({"ok": True, **summary}, json_output=json_output,
           render=lambda _: _print_layout_summary(source, output, to, summary))


def _print_layout_summary(source: Path, output: Path, to: str, summary: dict[str, Any]) -> None:
    click.echo(f"{source} -> {output} ({summary.get('family')}, {to}) in {summary['seconds']:.2f} s")
    for name, count in summary.get("components", {}).items():
        click.echo(f"  {name}: {count} tensors" if count else f"  {name}: configuration files")
    if summary.get("tensors") is not None:
        click.echo(f"  {summary['tensors']} tensors")
    extras = summary.get("extras") or []
    if extras:
        verb = "dropped (--drop-extras)" if summary.get("extras_dropped") else "kept in the sidecar"
        click.echo(f"  {len(extras)} tensor(s) with no place in diffusers {verb}: " + ", ".join(extras[:6])
                   + (" ..." if len(extras) > 6 else ""))
    for name, count in (summary.get("replaced") or {}).items():
        click.echo(f"  replaced {name}: {count} tensors")
    if summary.get("lacking"):
        click.echo("  lacking (not in the folder, not invented): " + ", ".join(summary["lacking"]))
    for note in summary.get("notes") or []:
        click.echo(f"  note: {note}")


def _refuse_unsafe(exc: UnsafeInputError, json_output: bool) -> None:
    def render(_document: object) -> None:
        click.echo(f"assetkit: error: {exc}", err=True)
        for finding in exc.findings:
            click.echo(f"  {finding.to_text()}", err=True)

    finish({"ok": False, "error": str(exc), "exit_code": EXIT_PROBLEMS, "findings": [f.to_dict() for f in exc.findings]},
           json_output=json_output, render=render, code=EXIT_PROBLEMS)


def _finish_batch(batch: Any, json_output: bool) -> None:
    finish(batch.to_dict(), json_output=json_output, render=lambda _: _print_batch(batch),
           code=EXIT_OK if batch.ok else EXIT_PROBLEMS)
