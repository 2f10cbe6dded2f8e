"""The OpenAPI paths and schemas of runtime schedules (:mod:`cronhub.web.schedules_api`).

Merged into the document of :mod:`cronhub.web.openapi`. Self-contained (no import from the
web package), so the document module can import it without a cycle.
"""

from __future__ import annotations

from typing import Any

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_ERROR = {"$ref": "#/components/schemas/Error"}
_SCHEDULE = {"$ref": "#/components/schemas/RuntimeSchedule"}
_COMMON_ERRORS = {
    "401": "The token is missing or wrong.",
    "503": "The storage (or a plugin it needs) did not answer.",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(**codes: str) -> dict[str, Any]:
    return {code: _json(_ERROR, text) for code, text in {**_COMMON_ERRORS, **codes}.items()}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_ID = _path_param("schedule_id", "The schedule's id.")
_JOB = _path_param("name", "The registered job's name (URL-encoded).")
_LIST = _json(
    {
        "type": "object",
        "required": ["schedules"],
        "properties": {"schedules": {"type": "array", "items": _SCHEDULE}},
    },
    "The schedules, oldest first.",
)
_BAD = "An unknown field, a bad expression, zone or time (`field`), or a bad parameter."

SCHEDULE_SCHEMAS: dict[str, Any] = {
    "RuntimeSchedule": {
        "type": "object",
        "description": "A schedule of a registered job, added at run time (data, never code).",
        "required": [
            "id",
            "job",
            "kind",
            "schedule",
            "schedule_text",
            "tz",
            "params",
            "start",
            "end",
            "paused",
            "next_run",
            "created_at",
            "created_by",
            "updated_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "job": {"type": "string"},
            "kind": {"enum": ["cron", "every", "at"]},
            "schedule": {"type": "string", "description": "The expression as written."},
            "schedule_text": {"type": "string"},
            "tz": {"type": "string"},
            "params": {"type": "object", "description": "Keyword parameters of the job."},
            "start": _NULLABLE_TIME,
            "end": _NULLABLE_TIME,
            "paused": {"type": "boolean"},
            "next_run": _NULLABLE_TIME,
            "created_at": _TIME,
            "created_by": {"type": ["string", "null"]},
            "updated_at": _TIME,
        },
    },
    "NewSchedule": {
        "type": "object",
        "description": "Exactly one of `cron`, `every`, `at`.",
        "additionalProperties": False,
        "properties": {
            "cron": {"type": "string", "examples": ["0 9 * * MON-FRI"]},
            "every": {
                "oneOf": [{"type": "string"}, {"type": "number"}],
                "examples": ["15m"],
            },
            "at": {"type": "string", "format": "date-time"},
            "tz": {"type": "string", "examples": ["Europe/Berlin"]},
            "params": {"type": "object"},
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "paused": {"type": "boolean"},
        },
    },
}

SCHEDULE_PATHS: dict[str, Any] = {
    "/api/jobs/{name}/schedules": {
        "get": {
            "operationId": "listJobSchedules",
            "summary": "The runtime schedules of one job.",
            "parameters": [_JOB],
            "responses": {"200": _LIST, **_errors(**{"400": _BAD, "404": "No such job."})},
        },
        "post": {
            "operationId": "addSchedule",
            "summary": "Add a runtime schedule for a registered job.",
            "parameters": [_JOB],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/NewSchedule"}}
                },
            },
            "responses": {
                "201": _json(_SCHEDULE, "The schedule as stored."),
                **_errors(
                    **{
                        "400": _BAD,
                        "403": "The CSRF check failed.",
                        "404": "No such job.",
                        "413": "The body is too large.",
                        "415": "The body is not JSON.",
                    }
                ),
            },
        },
    },
    "/api/schedules": {
        "get": {
            "operationId": "listSchedules",
            "summary": "Every runtime schedule, oldest first.",
            "parameters": [_query("job", {"type": "string"}, "Only this job's.")],
            "responses": {"200": _LIST, **_errors(**{"400": _BAD, "404": "No such job."})},
        }
    },
    "/api/schedules/{schedule_id}": {
        "get": {
            "operationId": "getSchedule",
            "summary": "One runtime schedule.",
            "parameters": [_ID],
            "responses": {
                "200": _json(_SCHEDULE, "The schedule."),
                **_errors(**{"400": _BAD, "404": "No such schedule."}),
            },
        },
        "delete": {
            "operationId": "deleteSchedule",
            "summary": "Remove a runtime schedule (its runs stay in history).",
            "parameters": [_ID],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["schedule", "removed"],
                        "properties": {"schedule": _SCHEDULE, "removed": {"const": True}},
                    },
                    "What was removed.",
                ),
                **_errors(
                    **{"400": _BAD, "403": "The CSRF check failed.", "404": "No such schedule."}
                ),
            },
        },
    },
    **{
        f"/api/schedules/{{schedule_id}}/{verb}": {
            "post": {
                "operationId": f"{verb}Schedule",
                "summary": f"{verb.capitalize()} a runtime schedule.",
                "parameters": [_ID],
                "responses": {
                    "200": _json(_SCHEDULE, "The schedule."),
                    **_errors(
                        **{
                            "400": _BAD,
                            "403": "The CSRF check failed.",
                            "404": "No such schedule.",
                        }
                    ),
                },
            }
        }
        for verb in ("pause", "resume")
    },
    "/api/preview": {
        "get": {
            "operationId": "previewSchedule",
            "summary": "The next run times of an expression, as `cronhub next` computes them.",
            "description": (
                "An expression, zone or window that cannot be used is answered with "
                "`valid: false` and the reason `cronhub next` gives (`error`, `field`)."
            ),
            "parameters": [
                {
                    **_query("expr", {"type": "string", "minLength": 1}, "The expression."),
                    "required": True,
                },
                _query(
                    "kind",
                    {"enum": ["cron", "every", "at", ""]},
                    "Read expr as this field; empty or left out: told from expr (as a form "
                    "with no choice sends it).",
                ),
                _query("tz", {"type": "string"}, "IANA zone (default UTC)."),
                _query("count", {"type": "integer", "minimum": 1, "maximum": 100}, "How many."),
                _query("start", {"type": "string"}, "No time before this ISO time."),
                _query("end", {"type": "string"}, "No time after this ISO time."),
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["valid", "times", "schedule_text", "tz", "error", "field"],
                        "properties": {
                            "valid": {"type": "boolean"},
                            "times": {"type": "array", "items": _TIME},
                            "schedule_text": {"type": ["string", "null"]},
                            "tz": {"type": "string"},
                            "error": {"type": ["string", "null"]},
                            "field": {"type": ["string", "null"]},
                        },
                    },
                    "The next run times, with the zone's offset; or why there are none.",
                ),
                **_errors(**{"400": "A missing or bad query parameter."}),
            },
        }
    },
}
