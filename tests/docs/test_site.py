"""The documentation site: mkdocs.yml and docs/ build strictly, every page is in the nav,
the README stays a front page, and the commands the pages show name files that exist."""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
README = ROOT / "README.md"
README_MAX_LINES = 250

ISSUE = re.compile(r"\bissue\s*#?\d+", re.IGNORECASE)
# A file name written in capitals is a placeholder in a synopsis (`--trace T.csv`).
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[a-z]+)?$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _pages() -> list[pathlib.Path]:
    return sorted(DOCS.rglob("*.md"))


def _shown_files() -> list[pathlib.Path]:
    return [README, *_pages()]


def _mkdocs() -> pathlib.Path:
    return pathlib.Path(sys.executable).parent / "mkdocs"


class _TolerantLoader(yaml.SafeLoader):
    """mkdocs.yml may carry tags such as !!python/name (custom fences); read them as text."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_TolerantLoader.add_multi_constructor("tag:yaml.org,2002:python/", _any_tag)
_TolerantLoader.add_multi_constructor("!", _any_tag)


def _nav_files(nav: Any) -> Iterator[str]:
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from _nav_files(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from _nav_files(value)


def test_the_site_builds_strictly(tmp_path: pathlib.Path) -> None:
    mkdocs = _mkdocs()
    if not mkdocs.exists():
        pytest.fail(f"{mkdocs} is missing: pip install -e '.[dev]' installs mkdocs")
    run = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stderr}\n{run.stdout}"


def test_the_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_every_page_is_in_the_nav() -> None:
    config = yaml.load(MKDOCS_YML.read_text(encoding="utf-8"), Loader=_TolerantLoader)
    in_nav = set(_nav_files(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in _pages()}
    assert pages, "docs/ has no pages"
    assert pages - in_nav == set(), "pages missing from mkdocs.yml's nav"
    assert in_nav - pages == set(), "nav entries with no page"


@pytest.mark.parametrize("path", _shown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_page_speaks_of_issues(path: pathlib.Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [m.group(0) for m in ISSUE.finditer(text)]
    assert found == [], f"{path.name} mentions {found}"


def _commands(text: str) -> Iterator[str]:
    """The `geo simulate` command lines of a page: in code blocks (joining lines ended by a
    backslash) and in inline code spans."""
    in_block = False
    pending = ""
    for line in text.splitlines():
        if FENCE.match(line):
            in_block = not in_block
            pending = ""
            continue
        if in_block:
            pending += line.rstrip().removesuffix("\\") + " "
            if not line.rstrip().endswith("\\"):
                if "geo simulate" in pending:
                    yield pending
                pending = ""
        else:
            for span in re.findall(r"`([^`]+)`", line):
                if "geo simulate" in span:
                    yield span


def _trace_files(command: str) -> Iterator[str]:
    command = command.split("#", 1)[0]
    try:
        words = shlex.split(command, posix=True)
    except ValueError:  # an unbalanced quote in prose: plain words will do
        words = command.split()
    for i, word in enumerate(words):
        if word == "--trace" and i + 1 < len(words):
            yield words[i + 1]
        elif word.startswith("--trace="):
            yield word.removeprefix("--trace=")


def test_the_commands_name_traces_that_exist() -> None:
    checked = 0
    for path in _shown_files():
        for command in _commands(path.read_text(encoding="utf-8")):
            for trace in _trace_files(command):
                where = f"{path.relative_to(ROOT)}: {command.strip()}"
                assert "shared" not in pathlib.PurePath(trace).parts, where
                assert not trace.startswith(".."), where
                if PLACEHOLDER.match(trace):
                    continue
                assert (ROOT / trace).is_file(), f"{where}: no file {trace}"
                checked += 1
    assert checked > 0, "no `geo simulate --trace FILE` command found to check"


def test_the_readmes_links_name_files_that_exist() -> None:
    """The front page links into docs/ (outside the site's build): each target exists, and
    each anchor is a heading of its page as MkDocs makes the ids."""
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert local, "the README links to no page"
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README.md links to {link}: no file {path}"
        if anchor:
            ids = {
                re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", target.read_text(encoding="utf-8"), re.M)
            }
            assert anchor in ids, f"README.md links to {link}: no heading #{anchor}"
