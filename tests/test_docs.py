"""The README and docs/ name only what exists: links, params keys, `shrink` commands and repository paths.

Fast and offline: it reads the markdown files, params.yaml and the CLI's help text. Each checker is a function
of (text, file) that returns its problems, so a test below also feeds it a broken page and asserts that it
complains (a checker that can never fail would pass silently on stale docs).
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
# A params key written alone, or as `key: value` / `key=value` with a one-word value (not an error message).
KEY = re.compile(r"([A-Za-z_][\w]*(?:\.[^\s.:=`]+)+)(?:\s*[:=]\s*\S+)?")
SET_FLAG = re.compile(r"(?:^|\s)-S\s+([\w.<>]+)=")
# `shrink X` as a command: at the start of a line or a code span, after `$(` or after `&&` / `|` / `;`
# (not inside an error message such as `not a shrink checkpoint`).
COMMAND = re.compile(r"(?:^[ \t]*|\$\(|&&[ \t]*|\|[ \t]*|;[ \t]*)shrink[ \t]+([a-z][a-z-]*)", re.M)
PATH = re.compile(r"(?<![\w./-])((?:src|stages|tests|scripts)/[^\s`'\")\]|,;:]*)")
# Model and artifact names share their first part with a params section (`distill.int8w`, `teacher.ort`):
# these last parts name files and runtimes, never params keys.
ARTIFACT_SUFFIXES = {"ort", "fp16", "uint8", "int8", "int8w", "pt", "onnx", "json", "txt", "csv", "pkl"}
WILDCARD = re.compile(r"^(<[^>]+>|…|\*)$")
FORBIDDEN = re.compile(r"\b(previous(ly)?|predates?)\b|\bissues?\s+#?\d+|(?<![\w/])#\d+\b", re.I)


def prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", text)


def code(text: str) -> list[str]:
    """Fenced blocks and inline code spans: where commands are shown."""
    return [m.group(0) for m in FENCE.finditer(text)] + INLINE.findall(prose(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[`*~]", "", text)
    text = "".join(c for c in text.lower() if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for h in HEADING.findall(prose(path.read_text())):
        s = slug(h)
        n = seen.get(s, 0)
        out.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    return out


def link_problems(text: str, page: Path) -> list[str]:
    problems = []
    for target in LINK.findall(prose(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            problems.append(f"{page.name}: link to a missing file: {target}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{page.name}: link to a missing heading: {target}")
    return problems


def params_tree() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def key_exists(node: object, parts: list[str]) -> bool:
    """Whether the dotted path ``parts`` walks through params.yaml; ``<round>``, ``…`` or ``*`` match any key."""
    if not parts:
        return True
    if not isinstance(node, dict):
        return False
    head = re.sub(r"\[\d+\]$", "", parts[0])  # quantize.models[1]
    if WILDCARD.match(head):
        return any(key_exists(child, parts[1:]) for child in node.values())
    return head in node and key_exists(node[head], parts[1:])


def key_problems(text: str, page: Path, tree: dict) -> list[str]:
    candidates = []
    for span in INLINE.findall(prose(text)):
        m = KEY.fullmatch(span.strip())
        if m:
            candidates.append(m.group(1))
    for block in code(text):
        candidates += SET_FLAG.findall(block)
    problems = []
    for key in candidates:
        parts = key.split(".")
        if parts[0] not in tree or parts[-1] in ARTIFACT_SUFFIXES:
            continue  # not a params key: a file, a model name, a Python module, ...
        if not key_exists(tree, parts):
            problems.append(f"{page.name}: `{key}` is not a key of params.yaml")
    return problems


def cli_commands() -> set[str]:
    from shrink import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.main(["--help"])
    m = re.search(r"usage: shrink \{([^}]*)\}", out.getvalue())
    assert m, f"cannot read the command list from `shrink --help`:\n{out.getvalue()}"
    return set(m.group(1).split(","))


def command_problems(text: str, page: Path, commands: set[str]) -> list[str]:
    problems = []
    for block in code(text):
        for name in COMMAND.findall(block):
            if name not in commands:
                problems.append(f"{page.name}: `shrink {name}` is not a command (shrink --help: {sorted(commands)})")
    return problems


def path_problems(text: str, page: Path) -> list[str]:
    problems = []
    for raw in PATH.findall(text):
        path = raw.rstrip(".")
        if any(c in path for c in "<>*…{}$"):
            continue  # a pattern, not a path
        if not (ROOT / path).exists():
            problems.append(f"{page.name}: names {path}, which does not exist")
    return problems


def wording_problems(text: str, page: Path) -> list[str]:
    return [f"{page.name}: says {m.group(0)!r} (name the run, not its history or an issue)"
            for m in FORBIDDEN.finditer(text)]


def test_there_are_pages_to_check() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert "README.md" in names and "docs/design.md" in names and "docs/experiments/README.md" in names
    assert len((ROOT / "README.md").read_text().splitlines()) <= 320, "the README is a manual of ~300 lines"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    assert link_problems(page.read_text(), page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_params_keys_exist(page: Path) -> None:
    assert key_problems(page.read_text(), page, params_tree()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shrink_commands_exist(page: Path) -> None:
    assert command_problems(page.read_text(), page, cli_commands()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_repository_paths_exist(page: Path) -> None:
    assert path_problems(page.read_text(), page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_history_words_or_issue_numbers(page: Path) -> None:
    assert wording_problems(page.read_text(), page) == []


def test_the_checkers_catch_stale_docs() -> None:
    """Each checker, fed one broken line beside a correct one, names exactly the broken one."""
    page = ROOT / "docs" / "design.md"  # a real page, so relative links resolve from docs/
    tree = params_tree()
    good_link, bad_link = "[ok](results.md#what-each-step-bought-same-run)", "[bad](no-such-page.md)"
    assert link_problems(f"{good_link} {bad_link}", page) == [f"design.md: link to a missing file: no-such-page.md"]
    assert link_problems("[x](results.md#no-such-heading)", page) == \
        ["design.md: link to a missing heading: results.md#no-such-heading"]
    assert key_problems("`distill.temperature: 2` and `prune.rounds.prune_2.epochs` and `distill.int8w`", page,
                        tree) == []
    assert key_problems("`distill.temprature` and `prune.rounds.prune_9.epochs`", page, tree) == [
        "design.md: `distill.temprature` is not a key of params.yaml",
        "design.md: `prune.rounds.prune_9.epochs` is not a key of params.yaml"]
    assert key_problems("```bash\ndvc exp run -S teacher.input_sise=48\n```", page, tree) == \
        ["design.md: `teacher.input_sise` is not a key of params.yaml"]
    commands = cli_commands()
    assert command_problems("```bash\nshrink predict x.jpg\nshrink quantise m.pt\n```", page, commands) == \
        [f"design.md: `shrink quantise` is not a command (shrink --help: {sorted(commands)})"]
    assert path_problems("see src/shrink/train.py and tests/test_nothing_here.py.", page) == \
        ["design.md: names tests/test_nothing_here.py, which does not exist"]
    assert len(wording_problems("as the previous run showed (issue 9)", page)) == 2
