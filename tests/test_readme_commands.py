"""Every `snakemake` command of the README's shell blocks runs as written (as a dry run: they
would train or download), so the README cannot drift from the workflow. Placeholders such as
<model> are filled with the demo's names; commands that need a SLURM cluster are checked by
`make test-slurm`, those that need the authors' local files by their overlay's own tests."""

from __future__ import annotations

import re
import shlex
import shutil

import pytest

from tests.conftest import REPO_ROOT, copy_workflow
from tests.test_workflow import _snakemake

pytestmark = pytest.mark.slow

#: What the README's placeholders stand for in these runs (the demo config's names).
PLACEHOLDERS = {
    "<results>": "results/demo",
    "<model>": "tiny-qwen2",
    "<method>": "empo",
    "<benchmark>": "add_test",
    "<protocol>": "greedy",
    "<grader>": "math-verify",
    "<config>": "config/demo.yaml",
}


def readme_snakemake_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith("snakemake"):
                commands.append(command)
    return commands


def runnable_here(command: str) -> bool:
    return "--profile slurm" not in command and "local-data" not in command


def test_the_readme_has_the_commands_this_test_expects():
    commands = readme_snakemake_commands()
    assert len(commands) >= 10
    assert sum(runnable_here(c) for c in commands) >= 8


@pytest.mark.parametrize("command", [c for c in readme_snakemake_commands() if runnable_here(c)])
def test_readme_command_runs_as_written(command, tmp_path):
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    assert "<" not in command, f"unknown placeholder in: {command}"
    if "--sdm conda" in command and shutil.which("conda") is None:
        pytest.skip("this machine has no conda (the command's per-stage environments)")
    workdir = copy_workflow(tmp_path)
    words = shlex.split(command)[1:]
    if "--configfile" in words:  # options after --configfile would be read as config files
        at = words.index("--configfile")
        words = words[:at] + ["-n"] + words[at:]
    else:
        words = ["-n", *words]
    result = _snakemake(workdir, *words, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{command}` failed:\n{output[-4000:]}"
    if words[:2] != ["-n", "plan"]:
        assert "This was a dry-run" in output or "Nothing to be done" in output, output[-2000:]
