"""Repository hygiene: packaging covers every package, the CLI explains itself, and no
committed file names a package registry host or a path of a particular machine."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from quayside.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if line]


def test_every_package_directory_is_packaged():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    dirs = config["package-dir"]
    found = set()
    for top, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([top, *rel.parts]))
    assert found == listed


FORBIDDEN = [
    r"pypi\.org",
    r"pythonhosted\.org",
    r"registry\.npmjs",
    r"deb\.debian\.org",
    r"file:///",
    r"/opt/(wheels|pypi)",
    r"/root/",
    r"/work/",
    r"/home/\w+",
]


def test_no_registry_hosts_or_machine_paths_in_the_repository():
    pattern = re.compile("|".join(FORBIDDEN))
    offenders = []
    for path in _tracked_files():
        if not path.is_file() or path.suffix in {".png", ".gz", ".zip"}:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line) and path.name != "test_repository.py":
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not offenders, "\n".join(offenders)


def _subcommand_paths(parser: argparse.ArgumentParser, prefix=()):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommand_paths(sub, (*prefix, name))


@pytest.mark.parametrize("path", list(_subcommand_paths(build_parser())), ids=lambda p: " ".join(p) or "quayside")
def test_every_subcommand_has_help(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: quayside") and len(out) > 80


def test_the_installed_command_runs():
    out = subprocess.run(
        [sys.executable, "-m", "quayside.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("quayside ")
