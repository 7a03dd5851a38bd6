"""``assetkit registry remote/push/pull`` and ``--remote`` on ls/find/verify/gc, end to end on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import _s3_helpers
import pytest
from _s3_helpers import S3Bucket
from click.testing import CliRunner

from assetkit.cli import main
from assetkit.factory import make_fixture

s3_server, s3_bucket = _s3_helpers.s3_server, _s3_helpers.s3_bucket  # the loopback S3 fixtures


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def cli_json(*args: str | Path) -> tuple[int, dict]:
    code, out, _ = cli(*args, "--json")
    return code, json.loads(out)  # exactly one JSON document


@pytest.fixture
def team(s3_bucket: S3Bucket, tmp_path: Path) -> dict[str, Path]:
    """Two registries (a laptop and a CI runner) with the same remote configured."""
    roots = {"laptop": tmp_path / "laptop", "runner": tmp_path / "runner"}
    for root in roots.values():
        code, out, err = cli("registry", "remote", "add", "team", s3_bucket.url("models"), "--endpoint-url",
                             s3_bucket.endpoint_url, "--region", "us-east-1", "--root", root)
        assert code == 0, err
    return roots


def test_team_workflow_end_to_end(team: dict[str, Path], tmp_path: Path, s3_bucket: S3Bucket) -> None:
    laptop, runner = team["laptop"], team["runner"]
    checkpoint = make_fixture("sd15", tmp_path, "safetensors", filename="my-fine-tune.safetensors")
    assert cli("registry", "add", checkpoint, "--name", "my-ft", "--root", laptop)[0] == 0

    code, doc = cli_json("registry", "remote", "ls", "--root", laptop)
    assert code == 0 and doc["default"] == "team" and doc["remotes"][0]["url"] == f"s3://{s3_bucket.bucket}/models"

    code, pushed = cli_json("registry", "push", "my-ft", "--root", laptop)
    assert code == 0 and pushed["ok"] and pushed["objects"] > 0 and pushed["skipped"] == 0
    code, again = cli_json("registry", "push", "--all", "--root", laptop)
    assert code == 0 and again["objects"] == 0 and again["bytes"] == 0 and again["skipped"] == pushed["objects"]

    code, listed = cli_json("registry", "ls", "--remote", "--root", runner)
    assert code == 0 and [a["name"] for a in listed["assets"]] == ["my-ft"]
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    code, found = cli_json("registry", "find", "--remote", sha[:10], "--root", runner)
    assert code == 0 and [m["name"] for m in found["matches"]] == ["my-ft"]

    code, pulled = cli_json("registry", "pull", "my-ft", "--root", runner)
    assert code == 0 and pulled["bytes"] == pushed["bytes"]
    out = tmp_path / "rebuilt.safetensors"
    assert cli("registry", "export", "my-ft", out, "--as", "file", "--root", runner)[0] == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha
    # The runner's local verify (untouched by --remote) says what the laptop's says: same state.
    runner_verify, laptop_verify = cli_json("registry", "verify", "--root", runner), cli_json(
        "registry", "verify", "--root", laptop)
    assert runner_verify == laptop_verify

    code, verified = cli_json("registry", "verify", "--remote", "--root", runner)
    assert code == 0 and verified["ok"] and verified["manifests"] == 1
    code, dry = cli_json("registry", "gc", "--remote", "--dry-run", "--root", runner)
    assert code == 0 and dry["dry_run"] and dry["unreferenced"] == [] and dry["grace_seconds"] == 24 * 3600

    code, text, _ = cli("registry", "push", "my-ft", "--root", laptop)
    assert code == 0 and "already there" in text


def test_tampered_object_fails_pull_and_verify(team: dict[str, Path], tmp_path: Path, s3_bucket: S3Bucket) -> None:
    laptop, runner = team["laptop"], team["runner"]
    single = make_fixture("vae_sd", tmp_path, "safetensors", filename="vae.safetensors")
    assert cli("registry", "add", single, "--name", "vae", "--root", laptop)[0] == 0
    assert cli("registry", "push", "vae", "--root", laptop)[0] == 0
    listing = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.bucket, Prefix="models/objects/")["Contents"]
    victim = max(listing, key=lambda o: o["Size"])["Key"]
    s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key=victim, Body=b"not the weights")

    code, out, err = cli("registry", "pull", "vae", "--root", runner)
    assert code == 1 and "refused" in out and "does not hash to its address" in out
    code, doc = cli_json("registry", "ls", "--all", "--root", runner)
    assert code == 0 and doc["assets"] == []  # nothing was imported
    code, report = cli_json("registry", "verify", "--remote", "--root", runner)
    assert code == 1 and [f["code"] for f in report["findings"]] == ["remote-blob-corrupt"]
    assert victim in report["findings"][0]["where"]


def test_usage_errors_are_one_line(team: dict[str, Path], tmp_path: Path) -> None:
    laptop = team["laptop"]
    empty = tmp_path / "no-remote"
    code, out, err = cli("registry", "push", "--all", "--root", empty)
    assert code == 2 and err.strip().splitlines() == [
        "assetkit: error: no remote configured; add one with: assetkit registry remote add NAME s3://bucket/prefix"]
    code, doc = cli_json("registry", "push", "--root", laptop)
    assert code == 2 and "--all" in doc["error"]
    code, out, err = cli("registry", "pull", "nothing-here", "--root", laptop)
    assert code == 1 and "no asset named 'nothing-here' on the remote" in out
    code, out, err = cli("registry", "pull", "ink", "--root", laptop)  # a short name is a name, not a prefix
    assert code == 1 and "no asset named 'ink' on the remote" in out
    code, out, err = cli("registry", "find", "--remote", "abc", "--root", laptop)  # the local find's rule
    assert code == 2 and err.strip() == ("assetkit: error: 'abc' is too short: a hash prefix needs at least 6 hex "
                                         "digits (it has 3)")
    code, out, err = cli("registry", "remote", "add", "x", "https://bucket/p", "--root", laptop)
    assert code == 2 and err.startswith("assetkit: error: remote URL must look like s3://")
    code, out, err = cli("registry", "gc", "--remote", "--root", laptop)
    assert code == 2 and "--dry-run" in err
    code, out, err = cli("registry", "gc", "--yes", "--root", laptop)
    assert code == 2 and "only go with --remote" in err
    code, out, err = cli("registry", "push", "--all", "--remote", "nope", "--root", laptop)
    assert code == 2 and "no remote named 'nope' (known: team)" in err
    assert cli("registry", "remote", "rm", "team", "--root", laptop)[0] == 0
    code, doc = cli_json("registry", "remote", "ls", "--root", laptop)
    assert doc["remotes"] == []


def test_two_processes_push_the_same_asset_at_once(team: dict[str, Path], tmp_path: Path) -> None:
    """Two real processes (two machines' registries) push the same checkpoint at the same moment."""
    roots = [team["laptop"], team["runner"]]
    checkpoint = make_fixture("sd15", tmp_path, "safetensors", filename="shared.safetensors")
    for root in roots:
        assert cli("registry", "add", checkpoint, "--name", "shared", "--root", root)[0] == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "assetkit", "registry", "push", "shared", "--root", str(root),
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for root in roots]
    docs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        docs.append(json.loads(out))
    blobs = docs[0]["objects"] + docs[0]["skipped"] + docs[0]["raced"]
    assert docs[1]["objects"] + docs[1]["skipped"] + docs[1]["raced"] == blobs
    assert docs[0]["objects"] + docs[1]["objects"] <= 2 * blobs
    code, report = cli_json("registry", "verify", "--remote", "--root", roots[0])
    assert code == 0 and report["blobs"] == blobs and report["manifests"] == 1


def test_a_name_taken_on_the_remote_by_other_content_is_refused(team: dict[str, Path], tmp_path: Path) -> None:
    laptop, runner = team["laptop"], team["runner"]
    first = make_fixture("vae_sd", tmp_path, "safetensors", filename="a.safetensors")
    other = make_fixture("vae_sd", tmp_path, "safetensors", filename="b.safetensors", seed=7)
    assert cli("registry", "add", first, "--name", "team-vae", "--root", laptop)[0] == 0
    assert cli("registry", "add", other, "--name", "team-vae", "--root", runner)[0] == 0
    assert cli("registry", "push", "team-vae", "--root", laptop)[0] == 0
    code, doc = cli_json("registry", "push", "team-vae", "--root", runner)
    assert code == 1 and "holds this name for other content" in doc["failed"][0]["error"]
    code, listed = cli_json("registry", "ls", "--remote", "--root", runner)
    sha = hashlib.sha256(first.read_bytes()).hexdigest()
    assert [(a["name"], a["sha256"]) for a in listed["assets"]] == [("team-vae", sha)]  # the first one stays
