"""Tests of cronhub.schedules: reference fire times, DST rules, properties, errors, wording."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import CroniterBadDateError, croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cronhub.errors import ScheduleError
from cronhub.schedules import (
    AtSchedule,
    CronSchedule,
    EverySchedule,
    Schedule,
    _compile,
    _Spec,
    _year_transitions,
    get_zone,
    iter_slots,
    jitter_delay,
    parse_duration,
    parse_expression,
)

CASES = json.loads((Path(__file__).parent / "data" / "cron_cases.json").read_text())
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
]
SECOND = timedelta(seconds=1)


def run(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    current = after
    for _ in range(count):
        slot = schedule.next_after(current)
        assert slot is not None
        out.append(slot)
        current = slot
    return out


def local(slots: list[datetime], tz: str) -> list[str]:
    return [s.astimezone(ZoneInfo(tz)).isoformat() for s in slots]


# --------------------------------------------------------------------------- reference cases


def case_id(case: dict) -> str:
    return f"{case['expr']} @ {case['tz']}: {case['note'][:48]}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_reference_case(case):
    zone = ZoneInfo(case["tz"])
    schedule = CronSchedule(case["expr"], case["tz"])
    got = run(schedule, datetime.fromisoformat(case["after"]), len(case["expected"]))
    for slot, text in zip(got, case["expected"], strict=True):
        expected = datetime.fromisoformat(text)
        assert slot == expected, (slot.astimezone(zone).isoformat(), text)
        assert slot.tzinfo is UTC and slot.microsecond == 0
        assert slot.astimezone(zone).utcoffset() == expected.utcoffset(), text


# --------------------------------------------------------------------------- hand-checked DST

# Transitions used (UTC): Berlin 2026-03-29 01:00 (+1 -> +2), 2026-10-25 01:00 (+2 -> +1);
# New York 2026-03-08 07:00 (-5 -> -4), 2026-11-01 06:00 (-4 -> -5); Sydney 2026-04-04 16:00
# (+11 -> +10), 2026-10-03 16:00 (+10 -> +11); Lord Howe 2026-04-04 15:00 (+11 -> +10:30),
# 2026-10-03 15:30 (+10:30 -> +11).
HAND_CASES = [
    # wildcard job through Berlin fall-back: 02:00 and 02:30 both happen twice
    ("*/30 * * * *", "Europe/Berlin", "2026-10-25T01:00:00+02:00",
     ["2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
      "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"]),
    # fixed-time job with two slots in the spring-forward gap: one run, at 03:00 CEST
    ("0,30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00+01:00",
     ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    # the same job on fall-back day: first occurrences only
    ("0,30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00+02:00",
     ["2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:00:00+01:00",
      "2026-10-26T02:30:00+01:00"]),
    # Lord Howe: 30-minute DST; 02:15 does not exist on 2026-10-04 (02:00 -> 02:30)
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00:00+10:30",
     ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]),
    # Lord Howe fall-back (02:00 +11 -> 01:30 +10:30): 01:30-01:59 happen twice
    ("*/20 * * * *", "Australia/Lord_Howe", "2026-04-05T01:15:00+11:00",
     ["2026-04-05T01:20:00+11:00", "2026-04-05T01:40:00+11:00", "2026-04-05T01:40:00+10:30",
      "2026-04-05T02:00:00+10:30", "2026-04-05T02:20:00+10:30"]),
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00+11:00",
     ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]),
    # Sydney (southern hemisphere): fall-back in April, spring-forward in October
    ("30 2 * * *", "Australia/Sydney", "2026-04-04T00:00:00+11:00",
     ["2026-04-04T02:30:00+11:00", "2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"]),
    ("30 2 * * *", "Australia/Sydney", "2026-10-03T00:00:00+10:00",
     ["2026-10-03T02:30:00+10:00", "2026-10-04T03:00:00+11:00", "2026-10-05T02:30:00+11:00"]),
    ("0 * * * *", "Australia/Sydney", "2026-04-05T01:30:00+11:00",
     ["2026-04-05T02:00:00+11:00", "2026-04-05T02:00:00+10:00", "2026-04-05T03:00:00+10:00"]),
    # a stepped hour is a wildcard job: 02:00 does not exist and is not replaced by 03:00
    ("0 */2 * * *", "Europe/Berlin", "2026-03-29T00:30:00+01:00",
     ["2026-03-29T04:00:00+02:00", "2026-03-29T06:00:00+02:00"]),
    # 6 fields (seconds first) across New York's gap: wildcard skips it, fixed-time runs at 03:00
    ("*/30 * * * * *", "America/New_York", "2026-03-08T01:59:00-05:00",
     ["2026-03-08T01:59:30-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:00:30-04:00"]),
    ("30 30 2 * * *", "America/New_York", "2026-03-07T12:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:30-04:00"]),
    # 02:00 (in the gap) and 03:00 both name the transition instant: one slot
    ("0 2,3 * * *", "America/New_York", "2026-03-08T00:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-09T03:00:00-04:00"]),
    # `after` in the repeated hour (second pass): a fixed-time job does not run again that day
    ("30 1 * * *", "America/New_York", "2026-11-01T01:10:00-05:00",
     ["2026-11-02T01:30:00-05:00"]),
    ("*/15 * * * *", "America/New_York", "2026-11-01T01:20:00-05:00",
     ["2026-11-01T01:30:00-05:00", "2026-11-01T01:45:00-05:00", "2026-11-01T02:00:00-05:00"]),
    # no DST at all
    ("30 2 * * *", "Asia/Kolkata", "2026-03-29T00:00:00+05:30",
     ["2026-03-29T02:30:00+05:30", "2026-03-30T02:30:00+05:30"]),
    # L, #, names, aliases, Vixie's day rule
    ("0 0 L 2 *", "UTC", "2027-01-01T00:00:00+00:00",
     ["2027-02-28T00:00:00+00:00", "2028-02-29T00:00:00+00:00", "2029-02-28T00:00:00+00:00"]),
    ("0 0 * * FRI#3", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-16T00:00:00+00:00", "2026-02-20T00:00:00+00:00", "2026-03-20T00:00:00+00:00"]),
    ("0 0 * * 1#1,5#3", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-05T00:00:00+00:00", "2026-01-16T00:00:00+00:00", "2026-02-02T00:00:00+00:00"]),
    # OR of a day of month and '#' (croniter alone finds no date for this)
    ("0 0 1 * 5#3", "UTC", "2025-12-31T12:00:00+00:00",
     ["2026-01-01T00:00:00+00:00", "2026-01-16T00:00:00+00:00", "2026-02-01T00:00:00+00:00",
      "2026-02-20T00:00:00+00:00", "2026-03-01T00:00:00+00:00", "2026-03-20T00:00:00+00:00"]),
    ("0 9 * * MON-FRI", "UTC", "2026-01-02T10:00:00+00:00",
     ["2026-01-05T09:00:00+00:00", "2026-01-06T09:00:00+00:00", "2026-01-07T09:00:00+00:00"]),
    ("0 0 1 jan,JUL *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-07-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]),
    ("0 0 * * 7", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]),
    ("0 0 */2 * 1", "UTC", "2026-01-01T00:00:00+00:00",  # '*' in a day field: AND
     ["2026-01-05T00:00:00+00:00", "2026-01-19T00:00:00+00:00", "2026-02-09T00:00:00+00:00",
      "2026-02-23T00:00:00+00:00"]),
    ("0 0 1-7 * 1", "UTC", "2026-01-31T00:00:00+00:00",  # both restricted: OR
     ["2026-02-01T00:00:00+00:00", "2026-02-02T00:00:00+00:00", "2026-02-03T00:00:00+00:00"]),
    ("0 0 30 2 1", "UTC", "2026-01-01T00:00:00+00:00",  # OR with an impossible day: Mondays
     ["2026-02-02T00:00:00+00:00", "2026-02-09T00:00:00+00:00"]),
    ("@yearly", "Europe/Berlin", "2026-06-01T00:00:00+02:00",
     ["2027-01-01T00:00:00+01:00", "2028-01-01T00:00:00+01:00"]),
    ("@monthly", "UTC", "2026-01-15T00:00:00+00:00",
     ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]),
    # croniter reads "5-5" as every minute and "59/15" as 59,14,29,44: cron means 5 and 59
    ("5-5 * * * *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-01T00:05:00+00:00", "2026-01-01T01:05:00+00:00"]),
    ("59/15 * * * *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-01T00:59:00+00:00", "2026-01-01T01:59:00+00:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), HAND_CASES)
def test_hand_checked_case(expr, tz, after, expected):
    got = run(CronSchedule(expr, tz), datetime.fromisoformat(after), len(expected))
    assert local(got, tz) == expected


def test_list_of_expressions_is_a_union():
    schedule = CronSchedule(["0 9 * * 1-5", "0 12 * * 6"], "UTC")
    got = run(schedule, datetime(2026, 1, 1, tzinfo=UTC), 4)
    assert local(got, "UTC") == [
        "2026-01-01T09:00:00+00:00",
        "2026-01-02T09:00:00+00:00",
        "2026-01-03T12:00:00+00:00",
        "2026-01-05T09:00:00+00:00",
    ]
    assert schedule.expression() == ["0 9 * * 1-5", "0 12 * * 6"]
    # the same slot from two expressions is one slot
    both = CronSchedule(["0 9 * * *", "0 9 * * 1"], "UTC")
    assert len(set(run(both, datetime(2026, 1, 1, tzinfo=UTC), 10))) == 10


def test_after_in_any_zone_and_with_microseconds():
    schedule = CronSchedule("0 9 * * *", "Europe/Berlin")
    tokyo = datetime(2026, 6, 1, 16, 0, 0, 1, tzinfo=ZoneInfo("Asia/Tokyo"))  # 09:00:00.000001 CEST
    assert schedule.next_after(tokyo) == datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    assert schedule.next_after(tokyo - timedelta(microseconds=2)) == datetime(
        2026, 6, 1, 7, 0, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="aware"):
        schedule.next_after(datetime(2026, 1, 1))


def test_transitions_found_to_the_second():
    berlin = _year_transitions(ZoneInfo("Europe/Berlin"), 2026)
    assert [(t.at, t.before, t.after) for t in berlin] == [
        (datetime(2026, 3, 29, 1), timedelta(hours=1), timedelta(hours=2)),
        (datetime(2026, 10, 25, 1), timedelta(hours=2), timedelta(hours=1)),
    ]
    lord_howe = _year_transitions(ZoneInfo("Australia/Lord_Howe"), 2026)
    assert [t.at for t in lord_howe] == [datetime(2026, 4, 4, 15), datetime(2026, 10, 3, 15, 30)]
    assert _year_transitions(ZoneInfo("Asia/Kolkata"), 2026) == ()
    assert _year_transitions(ZoneInfo("UTC"), 2026) == ()


def test_shared_schedule_is_thread_safe():
    schedule = CronSchedule("*/7 * * * *", "America/New_York")
    start = datetime(2026, 10, 31, 12, tzinfo=UTC)
    expected = run(schedule, start, 300)
    results: list[list[datetime]] = []

    def worker() -> None:
        results.append(run(schedule, start, 300))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 4


# --------------------------------------------------------------------------- properties


def field(lo: int, hi: int, names: tuple[str, ...] = (), base: int = 0) -> st.SearchStrategy[str]:
    """Numbers (or ``names``, the first one worth ``base``), ascending ranges, steps, lists."""
    index = st.integers(lo, hi - 1).flatmap(lambda a: st.tuples(st.just(a), st.integers(a + 1, hi)))

    def spell(value: int) -> st.SearchStrategy[str]:
        spelled = [str(value)]
        if 0 <= value - base < len(names):
            word = names[value - base]
            spelled += [word, word.upper()]
        return st.sampled_from(spelled)

    single = st.integers(lo, hi).flatmap(spell)
    span = index.flatmap(lambda p: st.tuples(spell(p[0]), spell(p[1])).map("-".join))
    step = st.integers(2, max(2, (hi - lo) // 2)).map(str)
    item = st.one_of(single, span, st.tuples(span, step).map("/".join))
    return st.one_of(
        st.just("*"),
        step.map(lambda n: f"*/{n}"),
        item,
        st.lists(st.one_of(single, span), min_size=2, max_size=3).map(",".join),
    )


_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@st.composite
def expressions(draw: st.DrawFn) -> str:
    fields = [
        draw(field(0, 59)),
        draw(field(0, 23)),
        draw(st.one_of(st.just("*"), field(1, 28), field(1, 31))),
        draw(st.one_of(st.just("*"), st.just("*"), field(1, 12))),
        draw(st.one_of(st.just("*"), field(0, 7))),
    ]
    if draw(st.integers(0, 3)) == 0:  # 6 fields, seconds first
        fields.insert(0, draw(st.one_of(st.just("0"), st.just("*/20"), field(0, 59))))
    return " ".join(fields)


@st.composite
def starts(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and an instant in 2020-2035, often within two days of one of its transitions."""
    tz = draw(st.sampled_from(ZONES))
    year = draw(st.integers(2020, 2035))
    near = [t.at for t in _year_transitions(ZoneInfo(tz), year)]
    if near and draw(st.booleans()):
        base = draw(st.sampled_from(near)).replace(tzinfo=UTC)
        return tz, base + timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))
    base = datetime(year, 1, 1, tzinfo=UTC)
    return tz, base + timedelta(seconds=draw(st.integers(0, 365 * 86400)))


def compile_or_skip(expr: str, tz: str) -> CronSchedule:
    try:
        return CronSchedule(expr, tz)
    except ScheduleError as exc:
        assert "never fires" in str(exc)
        assume(False)
        raise


def matches(expr: str, wall: datetime) -> bool:
    tokens = expr.split()
    full = tokens if len(tokens) == 6 else ["0", *tokens]
    day_or = not (full[3].startswith("*") or full[5].startswith("*"))
    return croniter.match(expr, wall, day_or=day_or, second_at_beginning=len(tokens) == 6)


def is_fixed(expr: str) -> bool:
    tokens = expr.split()
    full = tokens if len(tokens) == 6 else ["0", *tokens]
    return not any(t.startswith("*") for t in full[:3])


def is_spring_transition(zone: ZoneInfo, instant: datetime) -> bool:
    before = (instant - SECOND).astimezone(zone).utcoffset()
    after = instant.astimezone(zone).utcoffset()
    assert before is not None and after is not None
    return after > before


def transition_free(zone: ZoneInfo, a: datetime, b: datetime) -> bool | None:
    """Whether the UTC offset is the same hourly over [a, b]; None if that is too long to check."""
    if b - a > timedelta(days=60):
        return None
    offset = a.astimezone(zone).utcoffset()
    t = a
    while t <= b:
        if t.astimezone(zone).utcoffset() != offset:
            return False
        t += timedelta(hours=1)
    return b.astimezone(zone).utcoffset() == offset


PROPERTY = settings(max_examples=200, deadline=None)


@PROPERTY
@given(expressions(), starts())
def test_cron_properties(expr, start_at):
    tz, start = start_at
    zone = ZoneInfo(tz)
    schedule = compile_or_skip(expr, tz)
    slots = run(schedule, start, 12)
    # (1) strictly increasing, the first after the start
    assert slots[0] > start
    assert all(a < b for a, b in itertools.pairwise(slots))
    # (2) every local wall time matches, except fixed-time runs moved out of a gap
    for slot in slots:
        assert slot.tzinfo is UTC and slot.microsecond == 0
        wall = slot.astimezone(zone).replace(tzinfo=None)
        if not matches(expr, wall):
            assert is_fixed(expr), (expr, tz, slot)
            assert is_spring_transition(zone, slot), (expr, tz, slot)
    # (4) away from transitions, the same as croniter on naive UTC shifted by the offset
    free = transition_free(zone, start - timedelta(days=2), slots[-1] + timedelta(days=2))
    if free:
        offset = start.astimezone(zone).utcoffset()
        assert offset is not None
        tokens = expr.split()
        it = croniter(
            expr,
            start.astimezone(UTC).replace(tzinfo=None) + offset,
            ret_type=datetime,
            day_or=not (tokens[-3].startswith("*") or tokens[-1].startswith("*")),
            second_at_beginning=len(tokens) == 6,
        )
        plain = [(it.get_next() - offset).replace(tzinfo=UTC) for _ in slots]
        assert slots == plain


def model_slots(expr: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The slots in (start, end] by brute force over wall times, straight from the time rules."""
    offsets = [start.astimezone(zone).utcoffset(), end.astimezone(zone).utcoffset()]
    lo = start.astimezone(UTC).replace(tzinfo=None) + min(offsets)  # type: ignore[type-var]
    hi = end.astimezone(UTC).replace(tzinfo=None) + max(offsets)  # type: ignore[type-var]
    tokens = expr.split()
    it = croniter(
        expr,
        lo - SECOND,
        ret_type=datetime,
        day_or=not (tokens[-3].startswith("*") or tokens[-1].startswith("*")),
        second_at_beginning=len(tokens) == 6,
    )
    fixed = is_fixed(expr)
    found: set[datetime] = set()
    for n, wall in enumerate(iter(it.get_next, None)):
        assume(n < 5000)
        if wall > hi:
            break
        candidates = [wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1)]
        real = [c for c in candidates if c.astimezone(zone).replace(tzinfo=None) == wall]
        if real:  # one instant, or two in a fall-back overlap
            found.update(real[:1] if fixed else real)
        elif fixed:  # in a gap: the transition, bisected between the two readings
            a, b = min(candidates), max(candidates)
            before = a.astimezone(zone).utcoffset()
            while b - a > SECOND:
                mid = a + SECOND * ((b - a) // SECOND // 2)
                a, b = (mid, b) if mid.astimezone(zone).utcoffset() == before else (a, mid)
            found.add(b)
    return sorted(s for s in found if start < s <= end)


@PROPERTY
@given(expressions(), starts())
def test_cron_matches_brute_force_model(expr, start_at):
    tz, start = start_at
    zone = ZoneInfo(tz)
    schedule = compile_or_skip(expr, tz)
    slots = run(schedule, start, 8)
    assert model_slots(expr, zone, start, slots[-1]) == slots


@st.composite
def daily_jobs(draw: st.DrawFn) -> tuple[str, str, datetime]:
    """``M H * * *``, a zone and a start; often a time of day a transition skips or repeats."""
    tz = draw(st.sampled_from(ZONES))
    zone = ZoneInfo(tz)
    transitions = _year_transitions(zone, draw(st.integers(2020, 2035)))
    minute, hour = draw(st.integers(0, 59)), draw(st.integers(0, 23))
    if not transitions or draw(st.integers(0, 3)) == 0:
        start = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=draw(st.integers(0, 140000)))
        return f"{minute} {hour} * * *", tz, start
    t = draw(st.sampled_from(transitions))
    affected = t.at + min(t.before, t.after) + timedelta(minutes=draw(st.integers(0, 59)))
    if draw(st.booleans()):
        minute, hour = affected.minute, affected.hour
    start = t.at.replace(tzinfo=UTC) - timedelta(minutes=draw(st.integers(1, 3 * 24 * 60)))
    return f"{minute} {hour} * * *", tz, start


@PROPERTY
@given(daily_jobs())
def test_fixed_daily_job_runs_once_every_local_day(job):
    expr, tz, start = job
    zone = ZoneInfo(tz)
    slots = run(CronSchedule(expr, tz), start, 6)
    dates = [s.astimezone(zone).date() for s in slots]
    assert len(set(dates)) == len(dates)
    assert all((b - a).days == 1 for a, b in itertools.pairwise(dates))


@PROPERTY
@given(
    st.integers(1, 10 * 86400),
    st.datetimes(datetime(1990, 1, 1), datetime(2040, 1, 1)),
    st.datetimes(datetime(1990, 1, 1), datetime(2040, 1, 1)),
    st.sampled_from(ZONES),
)
def test_every_properties(seconds, anchor, start, tz):
    interval = timedelta(seconds=seconds)
    anchor = anchor.replace(microsecond=0, tzinfo=UTC)
    start = start.replace(tzinfo=ZoneInfo(tz))
    schedule = EverySchedule(interval, anchor=anchor)
    slots = run(schedule, start, 5)
    assert slots[0] > start
    assert slots[0] == anchor or slots[0] - interval <= start
    for n, slot in enumerate(slots):
        steps, rest = divmod(slot - anchor, interval)
        assert rest == timedelta(0) and steps >= 0
        assert slot == slots[0] + n * interval


# --------------------------------------------------------------------------- the field matcher


@st.composite
def plain_expressions(draw: st.DrawFn) -> str:
    """Expressions without 'L' or '#': every day rule, names, 5 and 6 fields."""
    fields = [
        draw(field(0, 59)),
        draw(field(0, 23)),
        draw(st.one_of(st.just("*"), field(1, 28), field(1, 31), st.sampled_from(["29", "31"]))),
        draw(st.one_of(st.just("*"), field(1, 12, _MONTH_NAMES, base=1), st.just("2"))),
        draw(st.one_of(st.just("*"), field(0, 7, _DAY_NAMES))),
    ]
    if draw(st.booleans()):  # 6 fields, seconds first
        fields.insert(0, draw(st.one_of(st.just("0"), field(0, 59))))
    return " ".join(fields)


def croniter_next(expr: str, wall: datetime) -> datetime | None:
    """croniter's next wall time after ``wall``, with cronhub's day rule; None if none."""
    tokens = expr.split()
    day_or = not (tokens[-3].startswith("*") or tokens[-1].startswith("*"))
    it = croniter(expr, wall, day_or=day_or, second_at_beginning=len(tokens) == 6)
    try:
        return it.get_next(datetime)
    except CroniterBadDateError:
        return None


def compiled(expr: str) -> _Spec:
    try:
        return _compile(expr)
    except ScheduleError as exc:
        assert "never fires" in str(exc)
        assume(False)
        raise


walls = st.datetimes(datetime(1999, 1, 1), datetime(2041, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0)
)


@settings(max_examples=1500, deadline=None)
@given(plain_expressions(), walls)
def test_field_matcher_is_croniter(expr, wall):
    spec = compiled(expr)
    assert spec.values is not None and spec.parts is None  # matched here: no croniter
    assert spec._match_next(wall) == croniter_next(expr, wall), (expr, wall)


@settings(max_examples=300, deadline=None)
@given(plain_expressions(), walls)
def test_field_matcher_walks_like_croniter(expr, wall):
    spec = compiled(expr)
    tokens = expr.split()
    day_or = not (tokens[-3].startswith("*") or tokens[-1].startswith("*"))
    it = croniter(expr, wall, day_or=day_or, second_at_beginning=len(tokens) == 6)
    current = wall
    for _ in range(20):
        found = spec.next_wall(current)  # through the memo, as schedules call it
        assert found == it.get_next(datetime), (expr, current)
        assert found is not None
        current = found


@pytest.mark.parametrize(
    ("expr", "wall", "expected"),
    [
        # month ends, short months, leap years
        ("0 0 31 * *", "2026-01-31 00:00:00", ["2026-03-31", "2026-05-31", "2026-07-31"]),
        ("0 0 29 2 *", "2024-02-29 00:00:00", ["2028-02-29", "2032-02-29"]),
        ("0 0 29 2 *", "2096-03-01 00:00:00", ["2104-02-29"]),  # 2100 is no leap year
        ("0 0 29,30 * *", "2026-01-30 00:00:00", ["2026-03-29", "2026-03-30", "2026-04-29"]),
        ("0 0 29 2 1", "2026-01-01 00:00:00", ["2026-02-02", "2026-02-09"]),  # OR: Mondays too
        ("0 0 */28 2 *", "2027-02-01 00:00:00", ["2028-02-01", "2028-02-29", "2029-02-01"]),
        ("0 0 29 2 */7", "2026-01-01 00:00:00", ["2032-02-29", "2060-02-29"]),  # AND: a Sunday
        ("0 0 1 * *", "2026-12-31 23:59:59", ["2027-01-01"]),
        # year ends and carries through every field
        ("59 23 31 12 *", "2026-12-31 23:59:00", ["2027-12-31 23:59:00"]),
        ("* * * * * *", "2026-12-31 23:59:59", ["2027-01-01 00:00:00", "2027-01-01 00:00:01"]),
        ("30 * * * * *", "2026-12-31 23:59:30", ["2027-01-01 00:00:30"]),
        ("0 0 * * sun", "2026-12-31 12:00:00", ["2027-01-03", "2027-01-10"]),
        ("0 12 * jan-mar,DEC mon-fri", "2026-03-31 12:00:00", ["2026-12-01 12:00:00"]),
        (
            "*/20 9-17/4 * * *",
            "2026-01-01 17:40:00",
            ["2026-01-02 09:00:00", "2026-01-02 09:20:00"],
        ),
    ],
)
def test_field_matcher_examples(expr, wall, expected):
    spec = _compile(expr)
    assert spec.values is not None
    got, current = [], datetime.fromisoformat(wall)
    for _ in expected:
        current = spec._match_next(current)
        got.append(current)
    assert got == [datetime.fromisoformat(e) for e in expected]
    assert got[0] == croniter_next(expr, datetime.fromisoformat(wall))


def test_field_matcher_strictly_after_and_none_past_year_9999():
    spec = _compile("30 10 * * *")
    assert spec._match_next(datetime(2026, 1, 1, 10, 30)) == datetime(2026, 1, 2, 10, 30)
    assert spec._match_next(datetime(2026, 1, 1, 10, 29, 59, 999)) == datetime(2026, 1, 1, 10, 30)
    with pytest.raises(ValueError):
        spec._match_next(datetime(9999, 12, 31, 11))
    assert CronSchedule("30 10 * * *").next_after(datetime(9999, 12, 31, 11, tzinfo=UTC)) is None


def test_repeated_after_is_answered_again_the_same():
    schedule = CronSchedule("0 9 * * 1-5", "Europe/Berlin")
    after = datetime(2026, 1, 2, 9, tzinfo=UTC)  # a Friday, 10:00 in Berlin
    monday = datetime(2026, 1, 5, 8, tzinfo=UTC)
    assert schedule.next_after(after) == schedule.next_after(after) == monday
    # the same instant in another zone, then other instants: answered anew each time
    assert schedule.next_after(after.astimezone(ZoneInfo("Asia/Tokyo"))) == monday
    assert schedule.next_after(monday) == datetime(2026, 1, 6, 8, tzinfo=UTC)
    assert schedule.next_after(after) == monday
    with pytest.raises(ValueError, match="aware"):
        schedule.next_after(after.replace(tzinfo=None))
    # a fall-back's two 01:30s are equal datetimes of one zone, an hour apart
    berlin = ZoneInfo("Europe/Berlin")
    quarterly = CronSchedule("*/15 * * * *", berlin)
    first = datetime(2026, 10, 25, 2, 50, tzinfo=berlin)
    second = first.replace(fold=1)
    assert first == second and first.astimezone(UTC) != second.astimezone(UTC)
    assert quarterly.next_after(first) == datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
    assert quarterly.next_after(second) == datetime(2026, 10, 25, 2, 0, tzinfo=UTC)
    assert quarterly.next_after(first) == datetime(2026, 10, 25, 1, 0, tzinfo=UTC)


def test_croniter_only_for_l_and_nth_days():
    assert _compile("0 0 1 * 1").parts is None
    for expr in ("0 0 L * *", "0 0 * * FRI#3", "0 0 1 * 5#3"):
        spec = _compile(expr)
        assert spec.values is None and spec.parts  # built (and checked) at compile time
        assert all(isinstance(p, croniter) for p in spec.parts)


# --------------------------------------------------------------------------- every, at, helpers


def test_every_schedule():
    schedule = EverySchedule("5m")
    assert schedule.next_after(datetime(2026, 1, 1, 0, 3, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 5, tzinfo=UTC
    )
    assert schedule.next_after(datetime(2026, 1, 1, 0, 5, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 10, tzinfo=UTC
    )
    assert schedule.expression() == 300
    assert schedule.interval == timedelta(minutes=5) == schedule.min_interval
    anchored = EverySchedule(90, anchor=datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC))
    assert anchored.next_after(datetime(2020, 1, 1, tzinfo=UTC)) == anchored.anchor
    assert anchored.next_after(datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 1, 40, tzinfo=UTC
    )
    assert EverySchedule(timedelta(hours=1)).expression() == 3600


def test_at_schedule():
    schedule = AtSchedule("2026-01-01T09:00:00+00:00")
    when = datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert schedule.next_after(when - SECOND) == when
    assert schedule.next_after(when) is None
    assert schedule.expression() == "2026-01-01T09:00:00+00:00"
    naive = AtSchedule("2026-07-01T09:00:00", tz="Europe/Berlin")
    assert naive.when == datetime(2026, 7, 1, 7, tzinfo=UTC)
    assert naive.expression() == "2026-07-01T09:00:00+02:00"
    gap = AtSchedule(datetime(2026, 3, 29, 2, 30), tz="Europe/Berlin")  # like a fixed-time job
    assert gap.when == datetime(2026, 3, 29, 1, tzinfo=UTC)
    overlap = AtSchedule("2026-10-25T02:30:00", tz="Europe/Berlin")  # the first occurrence
    assert overlap.when == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    zoned = AtSchedule(datetime(2026, 1, 1, 9, tzinfo=ZoneInfo("America/New_York")))
    assert zoned.tz.key == "America/New_York"
    assert zoned.when == datetime(2026, 1, 1, 14, tzinfo=UTC)


def test_parse_expression():
    assert isinstance(parse_expression("*/5 * * * *"), CronSchedule)
    assert parse_expression("@daily", tz="Europe/Berlin").tz.key == "Europe/Berlin"
    every = parse_expression("every:5m")
    assert isinstance(every, EverySchedule) and every.interval == timedelta(minutes=5)
    assert parse_expression("every:90").expression() == 90
    at = parse_expression("at:2026-01-01T09:00:00+00:00")
    assert isinstance(at, AtSchedule) and at.when == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert parse_expression("cron:0 9 * * *").expression() == "0 9 * * *"


def test_iter_slots():
    schedule = CronSchedule("0 * * * *")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    slots = list(iter_slots(schedule, start, start + timedelta(hours=3)))
    assert slots == [start + timedelta(hours=h) for h in (1, 2, 3)]  # (after, until]
    assert len(list(iter_slots(schedule, start, start + timedelta(days=1), limit=5))) == 5
    once = AtSchedule(start)
    assert list(iter_slots(once, start - SECOND, start + timedelta(days=9))) == [start]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        ("90", timedelta(seconds=90)),
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        ("1h 30m 15s", timedelta(seconds=5415)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(minutes=90)),
        (timedelta(minutes=2), timedelta(minutes=2)),
    ],
)
def test_parse_duration(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value", ["abc", "0", "0s", -5, 0, "5x", "1h30", "", True, float("nan"), float("inf")]
)
def test_bad_duration(value):
    with pytest.raises(ScheduleError) as info:
        parse_duration(value, what="timeout")  # type: ignore[arg-type]
    assert repr(value) in str(info.value)
    assert "timeout" in str(info.value)


def test_get_zone():
    assert get_zone(None).key == "UTC"
    berlin = ZoneInfo("Europe/Berlin")
    assert get_zone(berlin) is berlin
    assert get_zone("Europe/Berlin") is berlin
    assert get_zone(UTC).key == "UTC"  # type: ignore[arg-type]
    for bad in ("Mars/Olympus", "", "../etc/passwd", "Europe"):
        with pytest.raises(ScheduleError) as info:
            get_zone(bad)
        assert str(info.value) == f"{bad!r}: unknown time zone"


def test_jitter_delay_is_deterministic_and_bounded():
    slot = datetime(2026, 1, 1, 9, tzinfo=UTC)
    digest = hashlib.sha256(b"billing.nightly\n2026-01-01T09:00:00+00:00").digest()
    expected = (int.from_bytes(digest[:8], "big") >> 11) / 2**53 * 30
    assert jitter_delay("billing.nightly", slot, 30) == expected
    same_instant = slot.astimezone(ZoneInfo("Asia/Tokyo"))
    assert jitter_delay("billing.nightly", same_instant, 30) == expected
    delays = [jitter_delay(f"job{i}", slot, 600, timedelta(seconds=60)) for i in range(500)]
    assert all(0 <= d < 60 for d in delays) and len(set(delays)) > 400
    assert jitter_delay("job", slot, 0) == 0.0
    assert all(0 <= jitter_delay(f"j{i}", slot, 1e-300) < 1e-300 for i in range(50))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "'61 * * * *': minute field '61' is out of range 0-59"),
        ("* 24 * * *", "'* 24 * * *': hour field '24' is out of range 0-23"),
        ("0 0 0 * *", "day-of-month field '0' is out of range 1-31"),
        ("0 0 * 13 *", "month field '13' is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field '8' is out of range 0-7"),
        ("0 0 * * FOO", "day-of-week field 'FOO' is not a number or a name like MON"),
        ("5,61 * * * *", "minute field '5,61': '61' is out of range 0-59"),
        ("*/0 * * * *", "minute field '*/0' has no valid step"),
        ("5-1 * * * *", "minute field '5-1' is a range that runs backwards"),
        ("0 0 * * 1,5#3", "mixes plain days with '#' days"),
        ("0 0 * * 5#6", "needs a week number 1-5"),
        ("1,,2 * * * *", "minute field '1,,2': '' is not a number"),
        ("* * *", "expected 5 fields"),
        ("foo", "expected 5 fields"),
        ("60 * * * * *", "second field '60' is out of range 0-59"),
        ("* * * * * * *", "got 7"),
        ("@reboot", "unknown alias '@reboot'"),
        ("0 0 30 2 *", "never fires (there is no day 30 in February)"),
        ("0 0 31 4 *", "never fires (there is no day 31 in April)"),
        ("0 0 31 4,6,9 *", "never fires"),
        ("0 0 1 * 2#5", None),  # valid: OR
    ],
)
def test_bad_cron_expression(expr, message):
    if message is None:
        CronSchedule(expr)
        return
    with pytest.raises(ScheduleError) as info:
        CronSchedule(expr)
    assert repr(expr) in str(info.value)
    assert message in str(info.value)
    assert info.value.expression == expr


def test_bad_schedule_arguments():
    with pytest.raises(ScheduleError, match="unknown time zone"):
        CronSchedule("* * * * *", "Nowhere/Special")
    with pytest.raises(ScheduleError, match="no cron expression"):
        CronSchedule([])
    with pytest.raises(ScheduleError, match="'0 0 30 2 \\*': never fires"):
        CronSchedule(["0 9 * * *", "0 0 30 2 *"])
    with pytest.raises(ScheduleError, match=r"'1\.5s': interval must be a whole number"):
        EverySchedule("1.5s")
    with pytest.raises(ScheduleError, match="'-1m'"):
        EverySchedule("-1m")
    with pytest.raises(ScheduleError, match=r"'tomorrow': not an ISO 8601"):
        AtSchedule("tomorrow")
    with pytest.raises(ScheduleError, match=r"'0': interval must be positive"):
        parse_expression("every:0")


# --------------------------------------------------------------------------- words


@pytest.mark.parametrize(
    ("schedule", "text"),
    [
        (CronSchedule("30 2 * * *", "Europe/Berlin"), "at 02:30 every day (Europe/Berlin)"),
        (CronSchedule("*/5 * * * *"), "every 5 minutes"),
        (CronSchedule("*/15 * * * *"), "every 15 minutes"),
        (CronSchedule("* * * * *"), "every minute"),
        (CronSchedule("0 9 * * MON-FRI"), "at 09:00 on Monday through Friday"),
        (CronSchedule("0 9,17 * * 1,3,5"), "at 09:00 and 17:00 on Monday, Wednesday and Friday"),
        (CronSchedule("@hourly"), "every hour"),
        (CronSchedule("0 */2 * * *"), "every 2 hours"),
        (CronSchedule("0 0 L * *"), "at 00:00 on the last day of the month"),
        (CronSchedule("0 0 * * 5#3"), "at 00:00 on the third Friday of the month"),
        (CronSchedule("0 12 1 * 1"), "at 12:00 on day 1 of the month or on Monday"),
        (CronSchedule("0 0 1 1 *"), "at 00:00 on day 1 of the month in January"),
        (CronSchedule("*/20 * * * * *"), "every 20 seconds"),
        (CronSchedule("15 30 2 * * *"), "at 02:30:15 every day"),
        (CronSchedule("*/10 9-17 * * *"), "every 10 minutes during hour 9-17"),
        (
            CronSchedule(["0 9 * * 1-5", "0 12 * * 6"], "America/New_York"),
            "at 09:00 on Monday through Friday; at 12:00 on Saturday (America/New_York)",
        ),
        (AtSchedule("2026-01-01T09:00:00+00:00"), "once at 2026-01-01 09:00 UTC"),
        (EverySchedule("5m"), "every 5 minutes"),
        (EverySchedule(90), "every 90 seconds"),
        (EverySchedule("1h30m"), "every 90 minutes"),
        (EverySchedule("1d"), "every day"),
    ],
)
def test_describe(schedule, text):
    assert schedule.describe() == text
    assert isinstance(schedule, Schedule)


def test_cron_min_interval():
    assert CronSchedule("*/15 * * * *").min_interval == timedelta(minutes=15)
    assert CronSchedule("0 9,17 * * *").min_interval == timedelta(hours=8)
    assert CronSchedule(["0 9 * * *", "30 9 * * 6"]).min_interval == timedelta(minutes=30)
    assert CronSchedule("@weekly").min_interval == timedelta(days=1)  # a lower bound
