"""The README stays true: its configuration reference is the schema's, its commands exist."""

from __future__ import annotations

import re

from pipelines import config as cfg
from tests.conftest import REPO_ROOT


def test_readme_configuration_reference_matches_the_schema():
    readme = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"<!-- BEGIN CONFIG REFERENCE -->\n(.*?)\n<!-- END CONFIG REFERENCE -->", readme, re.S)
    assert block, "README lacks the configuration reference markers"
    assert block.group(1).strip() == cfg.schema_reference().strip(), (
        "README configuration reference is stale: run `python -m pipelines.config --reference` "
        "and paste it between the markers (or `python -m tests.test_docs --fix`)")


def test_readme_make_targets_exist():
    makefile = (REPO_ROOT / "Makefile").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    for target in set(re.findall(r"(?<![\w-])make ([a-z][a-z-]*)", readme)):
        assert re.search(rf"^{target}:", makefile, re.M), f"README mentions `make {target}`, Makefile lacks it"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def _fix() -> None:
    path = REPO_ROOT / "README.md"
    text = path.read_text()
    text = re.sub(r"(<!-- BEGIN CONFIG REFERENCE -->\n).*?(\n?<!-- END CONFIG REFERENCE -->)",
                  lambda m: m.group(1) + cfg.schema_reference() + "\n" + m.group(2).lstrip("\n"),
                  text, flags=re.S)
    path.write_text(text)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--fix"]:
        _fix()
