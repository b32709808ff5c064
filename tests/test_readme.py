"""Every `graftsearch` command in the README parses and resolves; every Python block compiles.

The quick start itself runs end to end in test_run.py::test_demo_preset_end_to_end.
"""

import re
import shlex
from pathlib import Path

import pytest

from graftsearch._cli import build_parser
from graftsearch._cli._run import _settings

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang):
    text = README.read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _commands():
    found = []
    for block in _blocks("bash"):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("graftsearch "):
                found.append(line)
    return found


COMMANDS = _commands()


def test_readme_has_the_commands_of_every_part():
    names = {shlex.split(c)[1] for c in COMMANDS}
    assert {"run", "taps", "cache", "data", "donor", "predict", "report", "resume"} <= names


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    argv = shlex.split(command.replace("<your run>", "run1").replace("<cache>", "c"))[1:]
    args = build_parser().parse_args(argv)
    if argv[0] == "run" and "--config" not in argv:
        _settings(args)  # the resolved RunSettings are valid


@pytest.mark.parametrize("block", _blocks("python"))
def test_readme_python_compiles(block):
    compile(block, "README.md", "exec")


def test_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    command = [line for line in ci if line.startswith("python -m pytest")]
    assert len(command) == 1
    assert any(command[0] in block.splitlines() for block in _blocks("bash"))
