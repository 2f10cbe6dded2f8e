"""Shared fixtures: cronhub's own test kit, plus helpers to run the installed executable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["cronhub.testing"]

ROOT = Path(__file__).resolve().parent.parent
CRONHUB = str(Path(sys.executable).parent / "cronhub")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def run_cli(tmp_path):
    """Run the installed ``cronhub`` executable in ``tmp_path`` as a user would."""

    def run(
        *args: str,
        env: dict[str, str | None] | None = None,
        cwd: Path | None = None,
        pythonpath: list[Path] | None = None,
        timeout: float = 60,
    ) -> Result:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CRONHUB_")}
        environ["CRONHUB_STORAGE"] = environ.get("CRONHUB_TEST_STORAGE", "memory://")
        if pythonpath:
            environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        for key, value in (env or {}).items():  # None unsets a variable
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        proc = subprocess.run(
            [CRONHUB, *args],
            capture_output=True,
            text=True,
            cwd=cwd or tmp_path,
            env=environ,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
