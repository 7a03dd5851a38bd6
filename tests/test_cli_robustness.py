"""The CLI as a demanding user meets it: odd paths, broken files, bad options.

Whatever the input, a command exits 0, 1 or 2, never prints a traceback, prints exactly one JSON
document on stdout with ``--json``, and leaves nothing half-written behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from assetkit.cli import main
from assetkit.factory import make_fixture

COMMANDS = ("inspect", "scan", "validate")


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_contract(result: Result, *, json_output: bool, codes: tuple[int, ...] = (0, 1, 2)) -> dict | None:
    """Exit code within the contract, no leaked exception or traceback, one JSON document."""
    assert result.exit_code in codes, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if not json_output:
        return None
    document, end = json.JSONDecoder().raw_decode(result.stdout.strip())
    assert result.stdout.strip()[end:].strip() == "", "more than one JSON document on stdout"
    return document


@pytest.fixture(scope="module")
def vae_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny SD VAE in each single-file container."""
    folder = tmp_path_factory.mktemp("vae")
    return {
        "safetensors": make_fixture("vae_sd", folder, "safetensors"),
        "torch-zip": make_fixture("vae_sd", folder, "torch-zip", filename="vae_zip.ckpt"),
        "torch-legacy": make_fixture("vae_sd", folder, "torch-legacy", filename="vae_legacy.ckpt"),
    }


# ------------------------------------------------------------------------------------------------
# usage errors under --json
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["inspect", "--json"],                                   # missing argument
    ["scan", "--bogus", "--json"],                           # unknown option
    ["bogus", "--json"],                                     # unknown command
    ["convert", "a.ckpt", "b.safetensors", "--dtype", "fp8", "--json"],  # bad choice
    ["convert", "a.ckpt", "b.safetensors", "--metadata", "novalue", "--json"],  # BadParameter in the command
])
def test_usage_error_with_json_is_one_json_document(argv: list[str]) -> None:
    result = invoke(*argv)
    document = assert_contract(result, json_output=True, codes=(2,))
    assert document["ok"] is False and document["exit_code"] == 2 and document["error"]


def test_usage_error_without_json_keeps_clicks_usage_text() -> None:
    result = invoke("scan", "--bogus")
    assert result.exit_code == 2 and result.stdout == ""
    assert "No such option" in result.stderr


def test_junit_pointing_at_a_folder_is_a_json_usage_error(tmp_path: Path, vae_files: dict[str, Path]) -> None:
    for command in ("scan", "validate"):
        result = invoke(command, vae_files["safetensors"], "--junit", tmp_path, "--json")
        assert "directory" in assert_contract(result, json_output=True, codes=(2,))["error"]


# ------------------------------------------------------------------------------------------------
# paths that are not plain files
# ------------------------------------------------------------------------------------------------
def test_fifo_is_refused_at_once_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "model.ckpt"
    os.mkfifo(fifo)
    for argv in (["inspect", fifo], ["scan", fifo], ["validate", fifo], ["convert", fifo, tmp_path / "o.safetensors"]):
        # a subprocess: opening a FIFO for reading blocks until a writer comes, i.e. forever
        proc = subprocess.run([sys.executable, "-m", "assetkit", *map(str, argv), "--json"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        document = json.loads(proc.stdout)
        assert "not a regular file" in document["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_symlink_loop_and_dangling_link_are_named(tmp_path: Path) -> None:
    (tmp_path / "a.ckpt").symlink_to(tmp_path / "b.ckpt")
    (tmp_path / "b.ckpt").symlink_to(tmp_path / "a.ckpt")
    (tmp_path / "gone.ckpt").symlink_to(tmp_path / "deleted.ckpt")
    for command in COMMANDS + ("convert",):
        loop = invoke(command, tmp_path / "a.ckpt")
        assert loop.exit_code == 2 and "symbolic link loop" in loop.output, loop.output
        dangling = invoke(command, tmp_path / "gone.ckpt", "--json")
        document = assert_contract(dangling, json_output=True, codes=(2,))
        assert "broken symbolic link" in document["error"] and "deleted.ckpt" in document["error"]


def test_scan_follows_symlinked_files_in_a_folder(tmp_path: Path, vae_files: dict[str, Path]) -> None:
    # the Hugging Face cache layout: snapshots/<rev>/name -> ../../blobs/<sha256>
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "0123abc"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    (blobs / "9f86d08").write_bytes(vae_files["torch-zip"].read_bytes())
    (snapshot / "vae.ckpt").symlink_to(Path("..", "..", "blobs", "9f86d08"))
    (snapshot / "same-again.ckpt").symlink_to(Path("vae.ckpt"))
    result = invoke("scan", snapshot, "--json")
    document = assert_contract(result, json_output=True, codes=(0,))
    assert [Path(r["path"]).name for r in document["results"]] == ["same-again.ckpt"]  # one file, once
    assert document["summary"]["safe"] == 1


def test_scan_of_a_folder_without_checkpoints_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    result = invoke("scan", tmp_path)
    assert result.exit_code == 1
    assert "no checkpoint files found" in result.stderr
    document = assert_contract(invoke("scan", tmp_path, "--json"), json_output=True, codes=(1,))
    assert document["summary"]["files"] == 0


# ------------------------------------------------------------------------------------------------
# truncated files
# ------------------------------------------------------------------------------------------------
def test_truncated_safetensors_is_a_broken_safetensors_not_a_pickle(tmp_path: Path,
                                                                   vae_files: dict[str, Path]) -> None:
    data = vae_files["safetensors"].read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    for cut in (9, 200, header_length // 2):
        broken = tmp_path / f"cut{cut}.safetensors"
        broken.write_bytes(data[:cut])
        # the length's low byte may read as a pickle opcode; the strict reader must still judge it
        inspect = invoke("inspect", broken)
        assert inspect.exit_code == 2 and "runs past the end of the file" in inspect.output, inspect.output
        scan = assert_contract(invoke("scan", broken, "--json"), json_output=True, codes=(1,))
        assert scan["results"][0]["verdict"] == "error"
        validate = assert_contract(invoke("validate", broken, "--json"), json_output=True, codes=(1,))
        assert [p["code"] for p in validate["problems"]] == ["st-header-past-eof"]
        convert = invoke("convert", broken, tmp_path / "out.safetensors")
        assert convert.exit_code == 2 and "runs past the end of the file" in convert.output
    assert not (tmp_path / "out.safetensors").exists()


def _pickle_ends(data: bytes, count: int) -> list[int]:
    import pickletools
    from io import BytesIO

    stream, ends = BytesIO(data), []
    for _ in range(count):
        for _op in pickletools.genops(stream):
            pass
        ends.append(stream.tell())
    return ends


def test_truncated_legacy_file_is_never_safe(tmp_path: Path, vae_files: dict[str, Path]) -> None:
    data = vae_files["torch-legacy"].read_bytes()
    boundaries = _pickle_ends(data, 4)  # magic, protocol, system info, main pickle
    cuts = [*boundaries, boundaries[0] + 3, boundaries[2] + 50, boundaries[3] + 20]
    for cut in cuts:
        broken = tmp_path / f"cut{cut}.ckpt"
        broken.write_bytes(data[:cut])
        document = assert_contract(invoke("scan", broken, "--json"), json_output=True, codes=(1,))
        assert document["results"][0]["verdict"] == "error", (cut, document)


@pytest.mark.parametrize("container", ["safetensors", "torch-zip", "torch-legacy"])
def test_every_truncation_obeys_the_contract(tmp_path: Path, vae_files: dict[str, Path], container: str) -> None:
    data = vae_files[container].read_bytes()
    for cut in (1, 8, 100, len(data) // 2, len(data) - 1):
        broken = tmp_path / f"cut{cut}{vae_files[container].suffix}"
        broken.write_bytes(data[:cut])
        for command in COMMANDS:
            assert_contract(invoke(command, broken, "--json"), json_output=True, codes=(1, 2))
        output = tmp_path / "out.safetensors"
        assert_contract(invoke("convert", broken, output, "--json"), json_output=True, codes=(1, 2))
        assert sorted(p.name for p in tmp_path.iterdir()) == [broken.name]  # no output, no temp file
        broken.unlink()


# ------------------------------------------------------------------------------------------------
# convert outputs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["model.bin", "model.ckpt", "model.PT", "model.pth"])
def test_convert_refuses_a_pickle_name_for_a_safetensors_output(tmp_path: Path, vae_files: dict[str, Path],
                                                                name: str) -> None:
    result = invoke("convert", vae_files["torch-zip"], tmp_path / name, "--json")
    document = assert_contract(result, json_output=True, codes=(2,))
    assert "give it a .safetensors name" in document["error"]
    assert list(tmp_path.iterdir()) == []


def test_junit_into_a_missing_folder_fails_before_the_work(tmp_path: Path, vae_files: dict[str, Path]) -> None:
    for command in ("scan", "validate"):
        result = invoke(command, vae_files["safetensors"], "--junit", tmp_path / "missing" / "report.xml", "--json")
        document = assert_contract(result, json_output=True, codes=(2,))
        assert "output folder does not exist" in document["error"]
        report = tmp_path / f"{command}.xml"
        assert_contract(invoke(command, vae_files["safetensors"], "--junit", report), json_output=False, codes=(0,))
        assert report.read_text().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.xml", "validate.xml"]  # no temp file left


def test_converting_a_folder_with_nothing_to_convert_says_why(tmp_path: Path, vae_files: dict[str, Path]) -> None:
    source = tmp_path / "weights"
    source.mkdir()
    (source / "vae.safetensors").write_bytes(vae_files["safetensors"].read_bytes())
    result = invoke("convert", source, tmp_path / "out")
    # not a success (exit 1, as scan of a folder without checkpoints), and no empty output folder made
    assert result.exit_code == 1 and "nothing to convert" in result.stderr
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke("convert", empty, tmp_path / "out").exit_code == 1
    assert invoke("scan", empty).exit_code == 1


def test_extracted_vae_and_converted_files_inspect_as_their_source(tmp_path: Path) -> None:
    checkpoint = make_fixture("sd15", tmp_path, "torch-legacy")
    source = json.loads(invoke("inspect", checkpoint, "--json").stdout)
    converted = tmp_path / "sd15.safetensors"
    assert_contract(invoke("convert", checkpoint, converted), json_output=False, codes=(0,))
    again = json.loads(invoke("inspect", converted, "--json").stdout)
    assert (again["kind"], again["family"], again["variant"]) == (source["kind"], source["family"], source["variant"])
    vae = tmp_path / "vae.safetensors"
    result = invoke("convert", checkpoint, vae, "--only", "first_stage_model.", "--strip-prefix", "first_stage_model.")
    assert result.exit_code == 0, result.output
    assert json.loads(invoke("inspect", vae, "--json").stdout)["kind"] == "vae"
