"""Every command registered in the CLI is documented in README.md, and the README documents no
command that does not exist (as sqlite-utils checks its docs against its CLI)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from assetkit.cli import COMMANDS, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
SECTION = re.compile(r"^#{2,4} `assetkit ([a-z][a-z0-9-]*)", re.MULTILINE)


def documented() -> set[str]:
    return set(SECTION.findall(README))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_registered_command_has_a_readme_section(name: str) -> None:
    assert name in documented(), f"README.md has no '### `assetkit {name} ...`' section"


def test_the_readme_documents_only_registered_commands() -> None:
    assert documented() <= set(COMMANDS), sorted(documented() - set(COMMANDS))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_registered_command_loads(name: str) -> None:
    """A registry entry names a module that defines a click command of that name."""
    import click

    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command) and command.name == name
