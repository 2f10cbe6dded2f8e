"""cronhub: scheduled jobs for Python applications, built from pluggy plugins."""

from __future__ import annotations

from cronhub.context import RunContext
from cronhub.hub import Hub
from cronhub.jobs import Job, job
from cronhub.plugins import hookimpl

__version__ = "0.1.0"

__all__ = ["Hub", "Job", "RunContext", "__version__", "hookimpl", "job"]
