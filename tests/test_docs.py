"""Keep the docs in step with the code: hooks, CLI commands, settings and links."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import cronhub.hookspecs
from cronhub.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOKS = sorted(n for n in dir(cronhub.hookspecs) if n.startswith("cronhub_"))

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_ROLE = re.compile(r":[a-z]+:`~?")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def normalize(text: str) -> str:
    """Text without RST roles, backticks, emphasis or line breaks, for comparing prose."""
    text = _ROLE.sub("", text)
    text = text.replace("`", "").replace("*", "")
    return " ".join(text.split())


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph."""
    paragraph = " ".join(doc.split("\n\n", 1)[0].split())
    match = re.match(r"(.+?\.)(?=\s+[A-Z(]|$)", paragraph)
    assert match, f"no sentence in {paragraph!r}"
    return match.group(1)


def signature_of(name: str) -> str:
    params = inspect.signature(getattr(cronhub.hookspecs, name)).parameters
    return f"{name}({', '.join(params)})"


def section(text: str, heading: str) -> str:
    """The text under the ``## heading`` line, up to the next level-2 heading."""
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next(
        (i for i in range(start, len(lines)) if lines[i].startswith("## ")),
        len(lines),
    )
    return "\n".join(lines[start:end])


def test_the_hooks_are_found():
    assert "cronhub_storage" in HOOKS and len(HOOKS) >= 10


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_section_with_its_signature(name):
    text = read(DOCS / "plugin_hooks.md")
    heading = f"## {signature_of(name)}"
    assert heading in text.splitlines(), f"docs/plugin_hooks.md has no heading {heading!r}"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_section_says_what_its_docstring_says(name):
    text = read(DOCS / "plugin_hooks.md")
    heading = f"## {signature_of(name)}"
    if heading not in text.splitlines():
        pytest.fail(f"docs/plugin_hooks.md has no heading {heading!r}")
    doc = inspect.getdoc(getattr(cronhub.hookspecs, name)) or ""
    sentence = normalize(first_sentence(doc))
    assert sentence in normalize(section(text, heading)), (
        f"the section {heading!r} of docs/plugin_hooks.md does not contain the first sentence "
        f"of the docstring of {name}: {sentence!r}"
    )


def cli_commands() -> list[str]:
    from cronhub.cli import make_cli
    from cronhub.plugins import get_plugin_manager

    app = make_cli(get_plugin_manager(entrypoints=False))
    names = []
    for command in app.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        names.append(name.replace("_", "-"))
    return sorted(names)


def test_the_cli_commands_are_found():
    assert {"list", "next", "run", "check"} <= set(cli_commands())


@pytest.mark.parametrize("command", cli_commands())
def test_every_cli_command_has_a_section(command):
    text = read(DOCS / "cli.md")
    assert f"## cronhub {command}" in text.splitlines(), (
        f"docs/cli.md has no section '## cronhub {command}'"
    )


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_every_setting_is_documented(key):
    text = read(DOCS / "configuration.md")
    assert f"`{key}`" in text, f"docs/configuration.md does not mention the setting `{key}`"
    assert f"`CRONHUB_{key.upper()}`" in text, f"docs/configuration.md: no CRONHUB_{key.upper()}"


MARKDOWN_FILES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def relative_links(path: Path) -> list[str]:
    text = _FENCE.sub("", read(path))
    targets = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http:, https:, mailto:, or an anchor in the same page
        targets.append(target)
    return targets


def test_the_docs_exist():
    names = {path.name for path in DOCS.glob("*.md")}
    assert {"plugin_hooks.md", "cli.md", "configuration.md"} <= names


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(path):
    missing = []
    for target in relative_links(path):
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if file_part and not (path.parent / file_part).exists():
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_the_link_finder_finds_links():
    sample = 'See [a](a.md), ![b](img/b.png "t"), [c](https://x.y/z) and [d](#here).'
    assert re.findall(_LINK, sample) == ["a.md", "img/b.png", "https://x.y/z", "#here"]
