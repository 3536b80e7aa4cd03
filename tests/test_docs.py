"""The README and the documentation: size, the quickstart that CI runs, links that resolve,
and wording about the library rather than about how it is developed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted([README, ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(path: Path) -> str:
    """The Markdown text without fenced code blocks and inline code."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """The anchor MkDocs (and GitHub, for these headings) gives a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8")))}


def test_readme_is_short() -> None:
    assert README.stat().st_size <= 12_000


def test_the_quickstart_holds_the_commands_and_ci_runs_the_second() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", section, re.S)
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].endswith("crmvae train --dataset polymnist --model crmvae --preset cpu-short")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci, "the README's test command must be a line of .ci/run, verbatim"
    assert any(line.strip().endswith("mkdocs build --strict") for line in ci)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that do not resolve: {broken}"


# Wording that describes how the project is developed (work orders, discussions, who got which
# machine) rather than what the library does.
DEVELOPMENT = re.compile(
    r"project brief|\bthe brief\b|speed issue|\bissue\s*#?\d+|\bsessions?\b|\bwas lent\b|\blent to\b"
    r"|this project's|of this project\b", re.I)


def _product_files() -> list[Path]:
    files = [*PAGES, ROOT / "CITATION.cff", ROOT / "mkdocs.yml", *(ROOT / "docs").rglob("*.html")]
    for folder in ("src", "examples", "benchmarks"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".sh", ".md", ".yaml"}]
    return sorted(set(files))


@pytest.mark.parametrize("path", _product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_speaks_of_how_the_project_is_developed(path: Path) -> None:
    hits = [m.group(0) for line in path.read_text(encoding="utf-8").splitlines()
            for m in DEVELOPMENT.finditer(line)]
    assert not hits, f"{path.relative_to(ROOT)}: {hits}"


SUMMARIZED = [p for p in PAGES if re.search(r"^<!-- summarize \w+:", FENCE.sub("", p.read_text(encoding="utf-8")), re.M)]


@pytest.mark.parametrize("page", SUMMARIZED, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_summarized_tables_match_the_studies_records(page: Path) -> None:
    from crmvae.evaluation.summary import update_blocks

    assert update_blocks(page, check=True) == [], f"run: crmvae summarize --update {page.relative_to(ROOT)}"
