"""What the job page shows of runtime schedules: the job's schedules and what its function takes.

The page renders the list on the server (first paint) and ``static/schedules.js`` keeps it
current and drives the form (with a preview of the next run times from ``/api/preview``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cronhub.params import ANY, signature_of, type_name
from cronhub.runtime_schedules import RuntimeSchedules

if TYPE_CHECKING:
    from cronhub.hub import Hub
    from cronhub.jobs import Job
    from cronhub.params import JobParameter

#: Example values for the form's placeholder, by type hint.
_EXAMPLES: dict[Any, Any] = {str: "text", int: 1, float: 1.5, bool: True}


def params_text(params: dict[str, Any]) -> str:
    """Parameters as one line of JSON, keys sorted (as the page and the CLI show them)."""
    return json.dumps(params, ensure_ascii=False, sort_keys=True)


def _default(parameter: JobParameter) -> str:
    try:
        return json.dumps(parameter.default, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(parameter.default)


def job_schedules(hub: Hub, job: Job) -> dict[str, Any]:
    """The job page's context for runtime schedules.

    ``runtime_schedules`` (schedule objects with ``params_text``), ``job_parameters`` (name,
    type, required, default), ``params_free`` (the function reads ``ctx.params`` itself),
    ``params_example`` (a JSON placeholder) and ``schedule_tz`` (the form's default zone).
    """
    storage = hub.storage
    found = storage.list_schedules(job.name) if hasattr(storage, "list_schedules") else []
    shown = RuntimeSchedules(hub).describe(found)
    for item in shown:
        item["params_text"] = params_text(item["params"])
    signature = signature_of(job.func)
    parameters = [
        {
            "name": p.name,
            "type": type_name(p.hint),
            "required": p.required,
            "default": None if p.required else _default(p),
        }
        for p in signature.parameters
    ]
    example = {p.name: _EXAMPLES.get(p.hint, "...") for p in signature.parameters if p.required}
    if not example and signature.parameters:
        first = signature.parameters[0]
        example = {first.name: _EXAMPLES.get(first.hint, "...") if first.hint is not ANY else 1}
    return {
        "runtime_schedules": shown,
        "job_parameters": parameters,
        "params_free": signature.var_keyword or (signature.takes_context and not parameters),
        "params_example": params_text(example) if example else "{}",
        "schedule_tz": job.tz.key if job.kind == "cron" else "UTC",
    }
