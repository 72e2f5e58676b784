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
        "and paste it between the markers (or `python -m tests.test_docs --fix`)"
    )


def test_readme_make_targets_exist():
    makefile = (REPO_ROOT / "Makefile").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    for target in set(re.findall(r"(?<![\w-])make ([a-z][a-z-]*)", readme)):
        assert re.search(rf"^{target}:", makefile, re.M), f"README mentions `make {target}`, Makefile lacks it"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


#: A path into one of our folders, as code comments, docstrings and docs cite them.
CITED_PATH = re.compile(r"(?<![\w./<{-])((?:pipelines|workflow|tests|benchmarks|config|envs|profiles|\.ci)/[\w./-]*\w)")


def test_every_repository_file_that_code_or_docs_cite_exists():
    """A comment or doc that names a file of this repository names one that exists (tests are
    left out: they cite the configs they write). Documents outside the repository (the team's
    field notes) are not cited: a user cannot open them."""
    sources = [
        path
        for folder in ("pipelines", "workflow", "benchmarks", "config", "envs", "profiles")
        for path in sorted((REPO_ROOT / folder).rglob("*"))
        if path.is_file() and path.suffix in (".py", ".smk", ".yaml", ".yml", ".rst", ".sh", ".txt", ".md")
    ]
    sources += [REPO_ROOT / name for name in ("README.md", "Makefile", "Snakefile", "pyproject.toml", ".ci/run")]
    missing, field_notes = [], []
    for source in sources:
        text = source.read_text(encoding="utf-8", errors="replace")
        missing += [
            (str(source.relative_to(REPO_ROOT)), cited)
            for cited in CITED_PATH.findall(text)
            if not (REPO_ROOT / cited.rstrip(".")).exists()
        ]
        field_notes += ["FIELD_NOTES" in text and str(source.relative_to(REPO_ROOT))]
    assert not missing, missing
    assert not any(field_notes), [name for name in field_notes if name]


def _fix() -> None:
    path = REPO_ROOT / "README.md"
    text = path.read_text()
    text = re.sub(
        r"(<!-- BEGIN CONFIG REFERENCE -->\n).*?(\n?<!-- END CONFIG REFERENCE -->)",
        lambda m: m.group(1) + cfg.schema_reference() + "\n" + m.group(2).lstrip("\n"),
        text,
        flags=re.S,
    )
    path.write_text(text)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--fix"]:
        _fix()
