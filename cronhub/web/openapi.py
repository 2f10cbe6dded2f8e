"""The OpenAPI 3.1 document of the JSON API, served at ``/api/openapi.json``.

Written by hand next to the handlers in :mod:`cronhub.web.api`; ``tests/test_api.py`` runs
schemathesis against it, which checks that every response matches the status codes and the
schemas declared here.
"""

from __future__ import annotations

import copy
from typing import Any

from cronhub import __version__
from cronhub.runs import RunStatus, Trigger
from cronhub.web.schedules_openapi import SCHEDULE_PATHS, SCHEDULE_SCHEMAS

_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_STATUSES = [s.value for s in RunStatus]

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, in a few words."},
            "detail": {"description": "Which value, job or run is at fault, and what is expected."},
        },
    },
    "Job": {
        "type": "object",
        "description": "A job: its schedule, state and options (as `cronhub list --json`).",
        "required": [
            "name",
            "kind",
            "schedule",
            "schedule_text",
            "tz",
            "tags",
            "description",
            "paused",
            "next_run",
            "last_run",
            "last_status",
            "plugin",
            "retries",
            "retry_delay",
            "backoff",
            "timeout",
            "overlap",
            "catch_up",
            "misfire_grace",
            "catch_up_limit",
            "catch_up_window",
            "jitter",
            "executor",
            "run_on_startup",
            "start",
            "end",
            "alerts",
        ],
        "properties": {
            "name": {"type": "string"},
            "kind": {"enum": ["cron", "every", "at", "on_demand"]},
            "schedule": {
                "description": (
                    "The cron expression (or list), interval seconds, or ISO time; null for a "
                    "job on demand (it runs when asked, and on runtime schedules)."
                ),
                "oneOf": [
                    {"type": "string"},
                    {"type": "number"},
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "null"},
                ],
            },
            "schedule_text": {"type": "string"},
            "tz": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "description": {"type": "string"},
            "paused": {"type": "boolean"},
            "next_run": _NULLABLE_TIME,
            "last_run": _NULLABLE_TIME,
            "last_status": {"enum": [*_STATUSES, None]},
            "plugin": {"type": "string"},
            "retries": {"type": "integer", "minimum": 0},
            "retry_delay": {"type": "number"},
            "backoff": {"type": "number"},
            "timeout": {"type": ["number", "null"]},
            "overlap": {"enum": ["skip", "allow", "queue", "replace"]},
            "catch_up": {"enum": ["latest", "all", "none"]},
            "misfire_grace": {"type": "number"},
            "catch_up_limit": {"type": "integer"},
            "catch_up_window": {"type": "number"},
            "jitter": {"type": "number"},
            "executor": {"type": "string"},
            "run_on_startup": {"type": "boolean"},
            "start": _NULLABLE_TIME,
            "end": _NULLABLE_TIME,
            "alerts": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Run": {
        "type": "object",
        "description": "A run: one attempt at a job's slot, or a record that a slot did not run.",
        "required": [
            "id",
            "job",
            "scheduled_for",
            "trigger",
            "status",
            "attempt",
            "schedule_id",
            "instance",
            "created_at",
            "not_before",
            "started_at",
            "finished_at",
            "duration_ms",
            "error",
            "missed_count",
            "dead_letter",
        ],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "job": {"type": "string"},
            "scheduled_for": _NULLABLE_TIME,
            "trigger": {"enum": [t.value for t in Trigger]},
            "status": {"enum": _STATUSES},
            "attempt": {"type": "integer", "minimum": 1},
            "schedule_id": {"type": ["string", "null"]},
            "instance": {"type": ["string", "null"]},
            "created_at": _NULLABLE_TIME,
            "not_before": _NULLABLE_TIME,
            "started_at": _NULLABLE_TIME,
            "finished_at": _NULLABLE_TIME,
            "duration_ms": {"type": ["integer", "null"]},
            "error": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["type", "message"],
                        "properties": {
                            "type": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                ]
            },
            "missed_count": {"type": "integer", "minimum": 0},
            "dead_letter": {"type": "boolean"},
        },
    },
    "Plugin": {
        "type": "object",
        "required": ["name", "distribution", "version", "builtin", "hooks", "error"],
        "properties": {
            "name": {"type": "string"},
            "distribution": {"type": ["string", "null"]},
            "version": {"type": ["string", "null"]},
            "module": {"type": ["string", "null"]},
            "builtin": {"type": "boolean"},
            "hooks": {"type": "array", "items": {"type": "string"}},
            "error": {"type": ["string", "null"]},
            "disabled": {"type": "boolean"},
        },
    },
    "Instance": {
        "type": "object",
        "required": ["id", "alive", "this", "scheduler"],
        "properties": {
            "id": {"type": "string"},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "version": {"type": "string"},
            "started_at": _NULLABLE_TIME,
            "heartbeat_at": _NULLABLE_TIME,
            "alive": {"type": "boolean"},
            "this": {"type": "boolean", "description": "The instance that answered."},
            "scheduler": {"type": "boolean", "description": "It runs a scheduler."},
        },
    },
    "Stats": {
        "type": "object",
        "required": [
            "jobs",
            "running",
            "queued",
            "runs_last_hour",
            "success_rate_24h",
            "dead_letters",
        ],
        "properties": {
            "jobs": {"type": "integer", "minimum": 0},
            "running": {"type": "integer", "minimum": 0},
            "queued": {"type": "integer", "minimum": 0},
            "runs_last_hour": {"type": "integer", "minimum": 0},
            "success_rate_24h": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "dead_letters": {"type": "integer", "minimum": 0},
        },
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": "A query parameter, path parameter or body that cannot be used.",
    "401": "The token is missing or wrong.",
    "403": "The CSRF check failed (a browser's request without the X-CSRF-Token header).",
    "404": "No such job or run.",
    "405": "The path exists with other methods.",
    "409": "The run already ended.",
    "413": "The body is too large.",
    "415": "The body is not JSON.",
    "503": "The storage (or a plugin it needs) did not answer.",
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _json(_ref("Error"), _ERRORS[code]) for code in ("401", "503", *codes)}


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


_JOB_NAME = _param("name", "path", {"type": "string"}, "The job's name (URL-encoded).")
#: Run ids are SQL BIGINTs.
MAX_ID = 2**63 - 1
_RUN_ID = _param(
    "run_id", "path", {"type": "integer", "minimum": 1, "maximum": MAX_ID}, "The run's id."
)
_JOB_FILTER = _param("job", "query", {"type": "string"}, "Only this job's.")
_LIMIT = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size.")

PATHS: dict[str, Any] = {
    "/api/jobs": {
        "get": {
            "operationId": "listJobs",
            "summary": "Every job, sorted by name.",
            "parameters": [_param("tag", "query", {"type": "string"}, "Only jobs with this tag.")],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["jobs"],
                        "properties": {"jobs": {"type": "array", "items": _ref("Job")}},
                    },
                    "The jobs.",
                ),
                **_errors("400"),
            },
        }
    },
    "/api/jobs/{name}": {
        "get": {
            "operationId": "getJob",
            "summary": "One job, with its newest runs in `runs`.",
            "parameters": [_JOB_NAME],
            "responses": {
                "200": _json(
                    {
                        "allOf": [
                            _ref("Job"),
                            {
                                "type": "object",
                                "required": ["runs"],
                                "properties": {"runs": {"type": "array", "items": _ref("Run")}},
                            },
                        ]
                    },
                    "The job and its 20 newest runs.",
                ),
                **_errors("400", "404", "405"),
            },
        }
    },
    "/api/jobs/{name}/run": {
        "post": {
            "operationId": "runJob",
            "summary": "Queue a manual run; any scheduler instance starts it.",
            "parameters": [_JOB_NAME],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "params": {
                                    "type": "object",
                                    "description": "Parameters the job sees as ctx.params.",
                                }
                            },
                            "additionalProperties": False,
                        }
                    }
                },
            },
            "responses": {
                "202": _json(
                    {
                        "type": "object",
                        "required": ["run_id", "run"],
                        "properties": {"run_id": {"type": "integer"}, "run": _ref("Run")},
                    },
                    "The run was queued.",
                ),
                **_errors("400", "403", "404", "405", "413", "415"),
            },
        }
    },
    "/api/jobs/{name}/pause": {
        "post": {
            "operationId": "pauseJob",
            "summary": "Pause the job (persistent; its slots neither run nor are caught up).",
            "parameters": [_JOB_NAME],
            "responses": {
                "200": _json(_ref("Job"), "The job, paused."),
                **_errors("400", "403", "404", "405"),
            },
        }
    },
    "/api/jobs/{name}/resume": {
        "post": {
            "operationId": "resumeJob",
            "summary": "Resume the job; the time it was paused is not caught up.",
            "parameters": [_JOB_NAME],
            "responses": {
                "200": _json(_ref("Job"), "The job, resumed."),
                **_errors("400", "403", "404", "405"),
            },
        }
    },
    "/api/runs": {
        "get": {
            "operationId": "listRuns",
            "summary": "Runs, newest first, a page at a time.",
            "parameters": [
                _JOB_FILTER,
                _param("status", "query", {"enum": _STATUSES}, "Only runs with this status."),
                _LIMIT,
                _param(
                    "before",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                    "Cursor: only runs with a smaller id (the previous page's `next`).",
                ),
                _param("dead_letter", "query", {"type": "boolean"}, "Only (not) dead letters."),
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["runs", "next"],
                        "properties": {
                            "runs": {"type": "array", "items": _ref("Run")},
                            "next": {
                                "type": ["integer", "null"],
                                "description": "`before` of the next page; null at the end.",
                            },
                        },
                    },
                    "A page of runs.",
                ),
                **_errors("400", "404"),
            },
        }
    },
    "/api/runs/{run_id}": {
        "get": {
            "operationId": "getRun",
            "summary": "One run, with its traceback, log and params.",
            "parameters": [_RUN_ID],
            "responses": {
                "200": _json(
                    {
                        "allOf": [
                            _ref("Run"),
                            {
                                "type": "object",
                                "required": ["traceback", "log", "params"],
                                "properties": {
                                    "traceback": {"type": ["string", "null"]},
                                    "log": {"type": "string"},
                                    "params": {"type": ["object", "null"]},
                                },
                            },
                        ]
                    },
                    "The run.",
                ),
                **_errors("400", "404"),
            },
        }
    },
    "/api/runs/{run_id}/cancel": {
        "post": {
            "operationId": "cancelRun",
            "summary": "Cancel a queued or running run, on whichever instance runs it.",
            "description": (
                "An async job's task is cancelled, a process job's process is killed, a thread "
                "job sees ctx.cancelled. The run ends `cancelled`."
            ),
            "parameters": [_RUN_ID],
            "responses": {
                "202": _json(
                    {"type": "object", "required": ["run"], "properties": {"run": _ref("Run")}},
                    "The run, cancelled.",
                ),
                **_errors("400", "403", "404", "409"),
            },
        }
    },
    "/api/dead-letters": {
        "get": {
            "operationId": "listDeadLetters",
            "summary": "Runs that failed their last attempt, newest first.",
            "parameters": [_JOB_FILTER, _LIMIT],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["runs"],
                        "properties": {"runs": {"type": "array", "items": _ref("Run")}},
                    },
                    "The dead letters.",
                ),
                **_errors("400"),
            },
        },
        "delete": {
            "operationId": "clearDeadLetters",
            "summary": "Clear dead letters (of one job with `job`); the runs stay in history.",
            "parameters": [_JOB_FILTER],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["cleared"],
                        "properties": {"cleared": {"type": "integer", "minimum": 0}},
                    },
                    "How many were cleared.",
                ),
                **_errors("400", "403"),
            },
        },
    },
    "/api/stats": {
        "get": {
            "operationId": "getStats",
            "summary": "Overall numbers: jobs, running, queued, runs last hour, success rate.",
            "responses": {"200": _json(_ref("Stats"), "The stats."), **_errors("400")},
        }
    },
    "/api/plugins": {
        "get": {
            "operationId": "listPlugins",
            "summary": "Loaded plugins (the records of `cronhub plugins --json`).",
            "parameters": [
                _param("all", "query", {"type": "boolean"}, "Include the built-in plugins."),
                _param("hook", "query", {"type": "string"}, "Only plugins implementing it."),
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["plugins"],
                        "properties": {"plugins": {"type": "array", "items": _ref("Plugin")}},
                    },
                    "The plugins.",
                ),
                **_errors("400"),
            },
        }
    },
    "/api/instances": {
        "get": {
            "operationId": "listInstances",
            "summary": "Instances sharing the storage (PostgreSQL), or just this one.",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["instances"],
                        "properties": {"instances": {"type": "array", "items": _ref("Instance")}},
                    },
                    "The instances.",
                ),
                **_errors("400"),
            },
        }
    },
    "/api/events": {
        "get": {
            "operationId": "streamEvents",
            "summary": "Server-Sent Events: run.queued/started/finished, job.paused/resumed.",
            "description": (
                "Each event has an integer `id`, an `event` kind and one line of JSON `data` "
                '(`{"run": Run}` or `{"job": Job}`). Send `Last-Event-ID` to receive the '
                "events after it; a `reset` event says they are gone (fetch the state again). "
                "A `: keep-alive` comment comes every 15 s."
            ),
            "parameters": [
                _param("Last-Event-ID", "header", {"type": "string"}, "Resume after this id.")
            ],
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors("400"),
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document.",
            "responses": {
                "200": _json({"type": "object"}, "The OpenAPI document."),
                **_errors("400"),
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "health",
            "summary": "200 when the scheduler loop (unless web-only) and the storage answer.",
            "security": [],
            "responses": {
                "200": _json({"$ref": "#/components/schemas/Health"}, "Healthy."),
                "503": _json({"$ref": "#/components/schemas/Health"}, "A part failed."),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format).",
            "responses": {
                "200": {
                    "description": "The metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(),
            },
        }
    },
}

PATHS.update(SCHEDULE_PATHS)
SCHEMAS.update(SCHEDULE_SCHEMAS)

SCHEMAS["Health"] = {
    "type": "object",
    "required": ["status", "scheduler", "storage"],
    "properties": {
        "status": {"enum": ["ok", "unavailable"]},
        "scheduler": {"type": "string", "description": "ok, stopped, or disabled (web-only)."},
        "storage": {"type": "string", "description": "ok, or why it did not answer."},
        "last_tick_age": {"type": "number"},
    },
}


def openapi_document(root_path: str = "") -> dict[str, Any]:
    """The document, with ``servers`` set to where the app is mounted."""
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "cronhub",
            "version": __version__,
            "description": (
                "The HTTP API of cronhub serve (or hub.asgi() mounted in an application). "
                "Errors are JSON objects {error, detail} with a 4xx status."
            ),
        },
        "servers": [{"url": root_path.rstrip("/") or "/"}],
        "paths": copy.deepcopy(PATHS),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "cronhub_token"},
            },
        },
        "security": [{"token": []}, {"cookie": []}, {}],
    }
    return document
