"""The peers' virtual environment: APScheduler and FastScheduler from PyPI, apart from cronhub.

The peers run in their own environment so that none of their dependencies (SQLAlchemy,
tzlocal, SQLModel, pydantic) can change what cronhub's subject imports, and cronhub's cannot
change theirs. The runner creates it on first use with the interpreter it runs under.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

#: What is installed, as pip requirement strings (croniter: FastScheduler's cron parser).
REQUIREMENTS: tuple[str, ...] = (
    "apscheduler>=3.11,<4",
    "fastscheduler",
    "sqlalchemy>=2",
    "croniter",
)

#: The distributions whose versions the report names.
REPORTED = ("apscheduler", "fastscheduler", "sqlalchemy", "sqlmodel", "croniter", "tzlocal")

_PROBE = """
import json, sqlite3, sys
from importlib.metadata import version, PackageNotFoundError
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = version(name)
    except PackageNotFoundError:
        found[name] = None
found["python"] = sys.version.split()[0]
found["sqlite"] = sqlite3.sqlite_version
print(json.dumps(found))
"""


def python_of(env: Path) -> Path:
    """The interpreter of the virtual environment ``env``."""
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def ensure(env: Path, *, upgrade: bool = False, quiet: bool = False) -> Path:
    """Create ``env`` with :data:`REQUIREMENTS` unless it has them; return its interpreter.

    :raises RuntimeError: when pip fails, with pip's output.
    """
    python = python_of(env)
    if python.exists() and not upgrade and _has_requirements(python):
        return python
    if not python.exists():
        if not quiet:
            print(f"creating the peers' environment in {env}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=False).create(env)
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if upgrade:
        command.append("--upgrade")
    done = subprocess.run(
        [*command, *REQUIREMENTS], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"pip could not install the peers into {env}:\n{done.stdout}\n{done.stderr}"
        )
    return python


def _has_requirements(python: Path) -> bool:
    versions = versions_in(python, ("apscheduler", "fastscheduler", "sqlalchemy", "croniter"))
    aps = versions.get("apscheduler") or ""
    return all(versions.get(n) for n in ("fastscheduler", "sqlalchemy", "croniter")) and (
        aps.startswith("3.") and int(aps.split(".")[1]) >= 11
    )


def versions_in(python: Path | str, names: tuple[str, ...] = REPORTED) -> dict[str, str | None]:
    """Versions of ``names`` (and of Python and SQLite) as seen by the interpreter ``python``."""
    try:
        done = subprocess.run(
            [str(python), "-c", _PROBE, *names],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return dict(json.loads(done.stdout))
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
