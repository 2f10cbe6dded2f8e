"""Meta-tests that keep the plugin surface honest: docstrings, tests and docs of every hook."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import cronhub.hookspecs

HOOKS = sorted(n for n in dir(cronhub.hookspecs) if n.startswith("cronhub_"))
TESTS = Path(__file__).parent
DOCS = TESTS.parent / "docs"


def test_the_hook_families_of_the_design_are_declared():
    assert set(HOOKS) == {
        "cronhub_collect",
        "cronhub_jobs",
        "cronhub_modify_jobs",  # discovery
        "cronhub_storage",  # storage
        "cronhub_lock",  # locking
        "cronhub_executor",
        "cronhub_run_started",
        "cronhub_run_finished",  # execution
        "cronhub_alert",  # alerts
        "cronhub_startup",
        "cronhub_shutdown",
        "cronhub_web_routes",
        "cronhub_cli",  # lifecycle
    }


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_docstring_is_complete(name):
    spec = getattr(cronhub.hookspecs, name)
    doc = inspect.getdoc(spec) or ""
    for param in inspect.signature(spec).parameters:
        assert f":param {param}:" in doc, f"{name}: undocumented parameter {param!r}"
    assert ":returns:" in doc, f"{name}: return value not documented"
    assert "Example::" in doc, f"{name}: no example"
    assert re.search(r"\bcalled\b", doc, re.IGNORECASE), f"{name}: does not say when it is called"
    assert "async" in doc, f"{name}: does not say whether it may be async"
    if getattr(spec, "cronhub_spec", {}).get("firstresult"):
        assert "firstresult" in doc, f"{name}: firstresult not mentioned"


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_fully_typed(name):
    spec = getattr(cronhub.hookspecs, name)
    signature = inspect.signature(spec)
    assert signature.return_annotation is not inspect.Signature.empty, name
    for param in signature.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name})"


#: Hooks that nothing calls yet, with the reason (their "has a test" check is an expected failure).
NOT_YET_USED: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=NOT_YET_USED[n]))
        if n in NOT_YET_USED
        else n
        for n in HOOKS
    ],
)
def test_every_hook_has_a_test(name):
    sources = [
        p.read_text()
        for p in TESTS.glob("test_*.py")
        if p.name not in ("test_hookspecs.py", "test_docs.py")
    ]
    assert any(f"def {name}(" in source for source in sources), f"no test implements {name}"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_documented_with_its_signature(name):
    params = ", ".join(inspect.signature(getattr(cronhub.hookspecs, name)).parameters)
    assert f"## {name}({params})" in (DOCS / "plugin_hooks.md").read_text()
