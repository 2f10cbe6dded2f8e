"""Job collection: ``@cronhub.job`` objects in the modules that entry points name."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

from cronhub.jobs import Job
from cronhub.plugins import hookimpl

if TYPE_CHECKING:
    from cronhub.hub import Hub


@hookimpl(trylast=True)
def cronhub_collect(module: ModuleType) -> list[Job]:
    return [value for value in vars(module).values() if isinstance(value, Job)]


@hookimpl(trylast=True)
def cronhub_jobs(hub: Hub) -> Iterator[Job]:
    pm = hub.plugin_manager
    for plugin_name, module in pm.plugin_modules():
        seen: set[int] = set()
        for _impl_plugin, jobs in pm.call_collector("cronhub_collect", module=module):
            for job in jobs:
                if id(job) in seen:
                    continue
                seen.add(id(job))
                yield job.replace(plugin=plugin_name)
