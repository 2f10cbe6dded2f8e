"""The faster ``__init__`` of the frozen dataclasses built per run (``cronhub.slots_init``)."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime

import pytest

from cronhub.alerting import Streak
from cronhub.executors import Outcome
from cronhub.runs import (
    Alert,
    ClaimOutcome,
    ClaimRequest,
    ClaimResult,
    Completion,
    Run,
    RunStatus,
    Trigger,
)
from cronhub.slots_init import stores_through_slots

NOW = datetime(2031, 3, 14, 12, tzinfo=UTC)
PER_RUN = (Run, ClaimRequest, ClaimResult, Completion, Outcome, Streak, Alert)


def plain_twin(cls: type) -> type:
    """The same fields and defaults, with the ``__init__`` dataclasses writes."""
    fields = [
        (
            f.name,
            f.type,
            dataclasses.field(default=f.default, default_factory=f.default_factory),
        )
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(f"Plain{cls.__name__}", fields, frozen=True, slots=True)


@pytest.mark.parametrize("cls", PER_RUN, ids=lambda c: c.__name__)
def test_the_same_parameters_and_defaults_as_dataclasses_writes(cls: type) -> None:
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(plain_twin(cls)).parameters
    assert list(ours) == list(theirs)
    empty = inspect.Parameter.empty
    for field in dataclasses.fields(cls):
        mine, plain = ours[field.name], theirs[field.name]
        assert (mine.default is empty) == (plain.default is empty), field.name
        if field.default is not dataclasses.MISSING:
            assert mine.default == plain.default == field.default, field.name


def test_a_run_built_positionally_or_by_keyword_holds_every_field() -> None:
    values = {f.name: f"value {n}" for n, f in enumerate(dataclasses.fields(Run))}
    by_keyword = Run(**values)
    positional = Run(*values.values())
    for name, value in values.items():
        assert getattr(by_keyword, name) == getattr(positional, name) == value
    assert by_keyword == positional and hash(by_keyword) == hash(positional)


def test_defaults_and_default_factories() -> None:
    run = Run(1, "job", NOW, Trigger.SCHEDULE, RunStatus.RUNNING)
    assert (run.attempt, run.schedule_id, run.log, run.params) == (1, "", "", {})
    other = Run(2, "job", NOW, Trigger.SCHEDULE, RunStatus.RUNNING)
    assert run.params is not other.params  # a new dict each time, as default_factory says
    request = ClaimRequest("job", NOW)
    assert request.attempt == 1 and request.params == {} and request.status is RunStatus.RUNNING
    completion = Completion(RunStatus.SUCCEEDED, NOW)
    assert completion.alerts == () and completion.started_at is None
    result = ClaimResult(request, ClaimOutcome.TAKEN)
    assert result.run is None
    with pytest.raises(TypeError):
        Run(1, "job")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Completion(RunStatus.SUCCEEDED, NOW, nope=1)  # type: ignore[call-arg]


def test_the_classes_stay_frozen() -> None:
    run = Run(1, "job", NOW, Trigger.SCHEDULE, RunStatus.RUNNING)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = RunStatus.FAILED  # type: ignore[misc]
    assert run.replace(status=RunStatus.FAILED).status is RunStatus.FAILED


def test_classes_it_does_not_cover_are_refused() -> None:
    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        a: int

    for cls in (NotFrozen, NoSlots, PostInit, KeywordOnly):
        with pytest.raises(TypeError, match=cls.__name__):
            stores_through_slots(cls)
