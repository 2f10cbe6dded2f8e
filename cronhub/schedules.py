"""Schedules: the slots at which a job fires.

Three kinds share the :class:`Schedule` protocol: :class:`CronSchedule` (cron expressions in an
IANA zone), :class:`EverySchedule` (fixed intervals anchored to an instant) and
:class:`AtSchedule` (one-off). ``next_after(after)`` returns the first slot strictly after
``after`` as an aware UTC datetime with whole seconds, or ``None`` when there is none.

Cron time rules are Vixie/Debian cron's (design section 3). Expressions are matched against
*wall-clock* times (naive, seconds first); this module maps wall times to instants with
:mod:`zoneinfo`, one stretch of constant UTC offset at a time:

- a **fixed-time** expression (seconds, minute and hour fields do not start with ``*``) whose
  slot falls in a spring-forward gap fires once, at the transition (the first wall time after
  the gap); in a fall-back overlap it fires once, at the first occurrence;
- a **wildcard** expression follows real time: nothing in a gap, both occurrences of a repeated
  wall time, in real-time order;
- day-of-month and day-of-week are OR-ed when both are restricted, AND-ed when either starts
  with ``*``.

Syntax: 5 fields, or 6 with seconds first; ``*``, numbers, ``a-b``, ``/step``, lists, month and
weekday names (``JAN``, ``MON``; weekday 7 is Sunday), ``L`` (last day of the month) and
``DAY#N`` (Nth weekday of the month), and the aliases ``@hourly`` ... ``@yearly``. Fields are
checked here (a range must not run backwards). Wall times are matched here, field by field,
except for ``L`` and ``#`` days: those expressions go to croniter (the reference the matcher is
tested against, and ten times slower) as explicit value lists, which sidesteps croniter's own
readings of ``5-5`` (every minute) and wrap-around ranges.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import math
import re
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import NamedTuple, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from cronhub.errors import ScheduleError

__all__ = [
    "AtSchedule",
    "CronSchedule",
    "EverySchedule",
    "Schedule",
    "get_zone",
    "iter_slots",
    "jitter_delay",
    "parse_duration",
    "parse_expression",
]

_UTC_ZONE = ZoneInfo("UTC")
_EPOCH = datetime(1970, 1, 1)  # naive UTC; internally instants are naive UTC datetimes
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO = timedelta(0)
_SECOND = timedelta(seconds=1)
_DAY_SECONDS = 86400


@runtime_checkable
class Schedule(Protocol):
    """What the engine needs from a schedule.

    The classes here also have ``min_interval`` (a :class:`~datetime.timedelta` or ``None``):
    the shortest nominal gap between two slots, for bounding jitter.
    """

    kind: str  #: ``cron``, ``every`` or ``at``
    tz: ZoneInfo

    def next_after(self, after: datetime) -> datetime | None:
        """The first slot strictly after the aware datetime ``after``, in UTC, or ``None``."""
        ...

    def expression(self) -> str | float | list[str]:
        """The schedule as written: cron string or list, interval seconds, or ISO time."""
        ...

    def describe(self) -> str:
        """The schedule in words."""
        ...


# --------------------------------------------------------------------------- zones, durations


def get_zone(name: str | ZoneInfo | None) -> ZoneInfo:
    """The zone called ``name`` (``None`` means UTC); ``ScheduleError`` if there is none."""
    if name is None:
        return _UTC_ZONE
    if isinstance(name, ZoneInfo):
        return name
    if isinstance(name, timezone) and name.utcoffset(None) == _ZERO:
        return _UTC_ZONE
    if isinstance(name, str) and name.strip():
        try:
            return ZoneInfo(name.strip())
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise ScheduleError(name, "unknown time zone")


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:\s*(?:\d+(?:\.\d*)?|\.\d+)\s*(?:ms|s|m|h|d|w))+\s*", re.ASCII)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)", re.ASCII)
_NUMBER = re.compile(r"\s*(?:\d+(?:\.\d*)?|\.\d+)\s*", re.ASCII)


def parse_duration(value: str | int | float | timedelta, *, what: str = "duration") -> timedelta:
    """A positive duration from seconds, a ``timedelta`` or text like ``90s``, ``1h30m``, ``500ms``.

    Units: ``ms``, ``s``, ``m``, ``h``, ``d``, ``w``; a bare number is seconds.
    """
    seconds: float | None = None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.lower()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
    if seconds is None or math.isnan(seconds):
        raise ScheduleError(
            value, f"invalid {what}: expected seconds or a duration like '90s', '5m', '1h30m'"
        )
    if seconds <= 0:
        raise ScheduleError(value, f"{what} must be positive")
    if isinstance(value, timedelta):
        return value
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ScheduleError(value, f"{what} is too long") from None


# --------------------------------------------------------------------------- time zone stretches


class _Transition(NamedTuple):
    at: datetime  # naive UTC: the first second with the new offset
    before: timedelta
    after: timedelta


class _Segment(NamedTuple):
    """A stretch ``[start, end)`` of instants with constant UTC offset."""

    start: datetime
    end: datetime
    offset: timedelta
    repeat_end: datetime | None  # after a fall-back at ``start``: walls are repeats before this
    next_offset: timedelta | None  # the offset from ``end`` on, if ``end`` is a transition


_NO_SEGMENT = _Segment(datetime.max, datetime.min, _ZERO, None, None)
_SAMPLE = timedelta(hours=6)


def _offset_at(zone: ZoneInfo, instant: datetime) -> timedelta:
    return zone.fromutc(instant.replace(tzinfo=zone)).utcoffset() or _ZERO


def _jan1(year: int) -> datetime:
    return datetime(min(max(year, 1), 9999), 1, 1)


@functools.lru_cache(maxsize=4096)
def _year_transitions(zone: ZoneInfo, year: int) -> tuple[_Transition, ...]:
    """Offset changes in ``(Jan 1 year, Jan 1 year+1]`` UTC: sampled every 6 h, bisected to 1 s."""
    if zone.utcoffset(None) is not None or not 1 <= year < 9999:
        return ()
    found = []
    t, end = _jan1(year), _jan1(year + 1)
    off = _offset_at(zone, t)
    while t < end:
        nt = min(t + _SAMPLE, end)
        noff = _offset_at(zone, nt)
        if noff != off:
            lo, hi = 0, int((nt - t).total_seconds())
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_at(zone, t + timedelta(seconds=mid)) == off:
                    lo = mid
                else:
                    hi = mid
            at = t + timedelta(seconds=hi)
            found.append(_Transition(at, off, _offset_at(zone, at)))
        t, off = nt, noff
    return tuple(found)


def _segment(zone: ZoneInfo, u: datetime) -> _Segment:
    """The stretch of constant offset around the naive UTC instant ``u``."""
    offset = _offset_at(zone, u)
    if zone.utcoffset(None) is not None:
        return _Segment(datetime.min, datetime.max, offset, None, None)
    prev = nxt = None
    for year in (u.year - 1, u.year):
        for tr in _year_transitions(zone, year):
            if tr.at <= u:
                prev = tr
    for year in (u.year, u.year + 1):
        nxt = next((tr for tr in _year_transitions(zone, year) if tr.at > u), None)
        if nxt is not None:
            break
    end = nxt.at if nxt else _jan1(u.year + 2)
    repeat_end = None
    if prev is not None and prev.before > prev.after:
        repeat_end = prev.at + (prev.before - prev.after)
    return _Segment(
        prev.at if prev else _jan1(u.year - 1),
        end if end > u else datetime.max,
        offset,
        repeat_end,
        nxt.after if nxt else None,
    )


#: The last stretch found per zone: schedules in one zone mostly ask about the same stretch
#: (all of them at start-up), and finding it costs more than the rest of a next time.
_SEGMENTS: dict[ZoneInfo, _Segment] = {}
_SEGMENTS_SIZE = 256


def _shared_segment(zone: ZoneInfo, u: datetime) -> _Segment:
    """:func:`_segment`, answered from the zone's last stretch when that one contains ``u``."""
    seg = _SEGMENTS.get(zone)
    if seg is None or not seg.start <= u < seg.end:
        seg = _segment(zone, u)
        if len(_SEGMENTS) >= _SEGMENTS_SIZE:
            _SEGMENTS.clear()
        _SEGMENTS[zone] = seg
    return seg


# datetime.replace() is slow (about 1 us); the hot path converts with arithmetic instead.
def _utc_naive(value: datetime, what: str = "after") -> datetime:
    """``value`` as a naive UTC datetime, floored to the second."""
    if value.tzinfo is None:
        raise ValueError(f"{what} must be an aware datetime, got {value.isoformat()}")
    naive = _EPOCH + (value - _EPOCH_UTC)
    return naive - timedelta(microseconds=naive.microsecond) if naive.microsecond else naive


def _aware(naive_utc: datetime) -> datetime:
    return _EPOCH_UTC + (naive_utc - _EPOCH)


# --------------------------------------------------------------------------- cron parsing


@dataclass(frozen=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()
    base: int = 0  # value of names[0]


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day-of-week", 0, 7, _WEEKDAYS, 0),
)
_DOM, _MONTH, _DOW = 3, 4, 5
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_PROBE_FROM = datetime(2000, 1, 1)


def _field_error(expr: str, field: _Field, token: str, part: str, problem: str) -> ScheduleError:
    if part == token:
        return ScheduleError(expr, f"{field.name} field {token!r} {problem}")
    return ScheduleError(expr, f"{field.name} field {token!r}: {part!r} {problem}")


def _value(expr: str, field: _Field, token: str, text: str) -> int:
    low = text.lower()
    if low.isascii() and low.isdigit():
        value = int(low)
    elif low in field.names:
        value = field.names.index(low) + field.base
    else:
        hint = f" or a name like {field.names[1].upper()}" if field.names else ""
        raise _field_error(expr, field, token, text, f"is not a number{hint}")
    if not field.lo <= value <= field.hi:
        raise _field_error(expr, field, token, text, f"is out of range {field.lo}-{field.hi}")
    return value


class _ParsedField(NamedTuple):
    """One field read: its values (sorted, and as a set), ``L`` and ``(weekday, n)`` pairs."""

    values: tuple[int, ...]
    set: frozenset[int]
    last: bool
    nth: frozenset[tuple[int, int]]


#: Fields already read, by ``(index, token)``: the tokens of most expressions repeat (``*``,
#: ``0``, ``1-5``), so a new expression mostly costs dictionary look-ups. Only readings that
#: succeeded are kept (errors name the whole expression); cleared when full.
_FIELD_CACHE: dict[tuple[int, str], _ParsedField] = {}
_FIELD_CACHE_SIZE = 8192


def _parse_field(expr: str, index: int, token: str) -> _ParsedField:
    """The field ``token`` at position ``index`` (seconds first) of ``expr``, read once."""
    key = (index, token)
    found = _FIELD_CACHE.get(key)
    if found is None:
        found = _read_field(expr, index, token)
        if len(_FIELD_CACHE) >= _FIELD_CACHE_SIZE:
            _FIELD_CACHE.clear()
        _FIELD_CACHE[key] = found
    return found


def _read_field(expr: str, index: int, token: str) -> _ParsedField:
    """Values, ``L`` (last day of month) and ``(weekday, n)`` pairs of one field."""
    field = _FIELDS[index]
    values: set[int] = set()
    last = False
    nth: set[tuple[int, int]] = set()
    for item in token.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise _field_error(expr, field, token, item, "has no valid step (1 or more)")
            step = int(step_text)
        if base == "*":
            lo, hi = field.lo, field.hi
        elif index == _DOM and base.upper() == "L" and not slash:
            last = True
            continue
        elif index == _DOW and "#" in base and not slash:
            day_text, _, n_text = base.partition("#")
            day = _value(expr, field, token, day_text) % 7
            if not (n_text.isascii() and n_text.isdigit() and 1 <= int(n_text) <= 5):
                raise _field_error(expr, field, token, item, "needs a week number 1-5 after '#'")
            nth.add((day, int(n_text)))
            continue
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = _value(expr, field, token, a), _value(expr, field, token, b)
            if lo > hi:
                raise _field_error(expr, field, token, item, "is a range that runs backwards")
        else:
            lo = _value(expr, field, token, base)
            hi = field.hi if slash else lo
        values.update(v % 7 if index == _DOW else v for v in range(lo, hi + 1, step))
    if values and nth:
        raise _field_error(expr, field, token, token, "mixes plain days with '#' days")
    ordered, as_set = _shared_values(tuple(sorted(values)))
    return _ParsedField(ordered, as_set, last, frozenset(nth))


@functools.lru_cache(maxsize=4096)
def _shared_values(values: tuple[int, ...]) -> tuple[tuple[int, ...], frozenset[int]]:
    # One tuple and one frozenset per distinct field: a '*' minute alone is 60 values, which
    # thousands of compiled expressions would otherwise each hold.
    return values, frozenset(values)


#: How far the matcher looks for a date, in years (as croniter: then there is none).
_HORIZON_YEARS = 50


def _month_days(year: int, month: int) -> int:
    if month != 2:
        return _MONTH_DAYS[month - 1]
    return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28


@dataclass(eq=False)
class _Spec:
    """One compiled cron expression, shared between schedules and threads.

    Plain expressions (numbers, ranges, steps, lists, names) are matched here, field by
    field, without state; croniter, much slower, is kept for ``L`` and ``DAY#N`` days (its
    objects are stateful: calls are locked). Not changed after compiling but for the memo.
    """

    text: str
    tokens: tuple[str, ...]  # six fields, seconds first, aliases expanded
    sets: tuple[frozenset[int], ...]
    fixed: bool
    day_or: bool
    #: The six fields' values in ascending order, or ``None``: croniter answers (``L``, ``#``).
    values: tuple[tuple[int, ...], ...] | None
    #: croniter's expressions (fields as written for it) and day rules: their union is the
    #: expression (2 parts only for an OR with '#'). Empty for a plain expression.
    recipe: tuple[tuple[tuple[str, ...], bool], ...]
    #: croniter objects of :attr:`recipe` (built when first needed) and their lock, or
    #: ``None`` for a plain expression.
    parts: list[croniter] | None = None
    lock: threading.Lock | None = None
    #: The last answer, ``(wall, next)``: it also answers every wall in ``[wall, next)``.
    #: Jobs sharing this expression ask for the same next time at start-up. Replaced whole,
    #: so a thread always reads a consistent pair.
    last: tuple[datetime, datetime] = (datetime.max, datetime.min)

    def next_wall(self, wall: datetime) -> datetime | None:
        """The first matching naive wall time strictly after ``wall``."""
        asked, answer = self.last
        if asked <= wall < answer:
            return answer
        if self.values is not None:
            found = self._match_next(wall)
        else:
            assert self.lock is not None
            with self.lock:
                found = self._croniter_next(wall)
        if found is not None:
            self.last = (wall, found)
        return found

    def _croniter_next(self, wall: datetime) -> datetime | None:
        assert self.parts is not None
        if not self.parts:
            self.parts.extend(_croniter(self.text, tokens, d) for tokens, d in self.recipe)
        found = []
        for part in self.parts:
            try:
                found.append(part.get_next(datetime, wall))
            except CroniterBadDateError:
                continue
        return min(found, default=None)

    def _match_next(self, wall: datetime) -> datetime | None:
        """The first match after ``wall``: each field moved to its next allowed value.

        A field without a later value carries into the next larger unit and resets the
        smaller ones. ``None`` when no date in :data:`_HORIZON_YEARS` years matches.
        """
        assert self.values is not None
        secs, mins, hours, _, months, _ = self.values
        sec_set, min_set, hour_set, _, month_set, _ = self.sets
        if wall.microsecond:
            wall -= timedelta(microseconds=wall.microsecond)
        t = wall + _SECOND
        year, month, day = t.year, t.month, t.day
        hour, minute, second = t.hour, t.minute, t.second
        limit = year + _HORIZON_YEARS
        while year <= limit:
            if month not in month_set:
                i = bisect.bisect_left(months, month)
                if i == len(months):
                    year, month = year + 1, months[0]
                else:
                    month = months[i]
                day = 1
                hour = minute = second = 0
            found = self._first_day(year, month, day)
            if not found:
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
                day = 1
                hour = minute = second = 0
                continue
            if found != day:
                day = found
                hour = minute = second = 0
            if hour not in hour_set:
                i = bisect.bisect_left(hours, hour)
                if i == len(hours):
                    day += 1
                    hour = minute = second = 0
                    continue
                hour = hours[i]
                minute = second = 0
            if minute not in min_set:
                i = bisect.bisect_left(mins, minute)
                if i == len(mins):
                    hour += 1
                    minute = second = 0
                    continue
                minute = mins[i]
                second = 0
            if second not in sec_set:
                i = bisect.bisect_left(secs, second)
                if i == len(secs):
                    minute += 1
                    second = 0
                    continue
                second = secs[i]
            return datetime(year, month, day, hour, minute, second)
        return None

    def _first_day(self, year: int, month: int, day: int) -> int:
        """The first matching day from ``day`` on in this month, or 0."""
        assert self.values is not None
        end = _month_days(year, month)
        if day > end:
            return 0
        days, weekdays = self.sets[_DOM], self.sets[_DOW]
        if not self.day_or and len(weekdays) == 7:  # any weekday: day-of-month values only
            values = self.values[_DOM]
            i = bisect.bisect_left(values, day)
            return values[i] if i < len(values) and values[i] <= end else 0
        weekday = (date(year, month, day).weekday() + 1) % 7  # 0 is Sunday
        for d in range(day, end + 1):
            if self.day_or:
                if d in days or weekday in weekdays:
                    return d
            elif d in days and weekday in weekdays:
                return d
            weekday = weekday + 1 if weekday < 6 else 0
        return 0


def _croniter(expr: str, tokens: Sequence[str], day_or: bool) -> croniter:
    try:
        six = len(tokens) == 6  # 5 fields when seconds are implicit: fewer croniter steps
        return croniter(" ".join(tokens), _PROBE_FROM, day_or=day_or, second_at_beginning=six)
    except CroniterError as exc:
        raise ScheduleError(expr, f"not a valid cron expression ({exc})") from None


#: Compiled expressions in use: every schedule of one expression shares its ``_Spec`` (a
#: compiled expression costs more memory than the rest of a job), and recompiling costs
#: more than the rest of registering a job.
_SPECS: weakref.WeakValueDictionary[str, _Spec] = weakref.WeakValueDictionary()
_SPECS_LOCK = threading.Lock()


def _compile(expr: str) -> _Spec:
    """Validate ``expr`` and compile it, or return the shared compiled expression."""
    spec = _SPECS.get(expr)
    if spec is None:
        spec = _recent(expr)
        with _SPECS_LOCK:
            spec = _SPECS.setdefault(expr, spec)
    return spec


@functools.lru_cache(maxsize=256)
def _recent(expr: str) -> _Spec:
    # A few strong references, so that a schedule made and dropped again and again (the CLI,
    # the API's previews) does not recompile.
    return _compile_new(expr)


def _compile_new(expr: str) -> _Spec:
    text = expr.strip()
    if text.startswith("@"):
        if text.lower() not in _ALIASES:
            known = ", ".join(_ALIASES)
            raise ScheduleError(expr, f"unknown alias {text!r} (known: {known})")
        text = _ALIASES[text.lower()]
    tokens = text.split()
    implicit_seconds = len(tokens) == 5
    if implicit_seconds:
        tokens.insert(0, "0")
    elif len(tokens) != 6:
        raise ScheduleError(
            expr,
            "expected 5 fields (minute hour day-of-month month day-of-week) "
            f"or 6 with seconds first, got {len(tokens)}",
        )
    parsed = [_parse_field(expr, i, tok) for i, tok in enumerate(tokens)]
    dom_tok, dow_tok = tokens[_DOM], tokens[_DOW]
    day_or = not (dom_tok.startswith("*") or dow_tok.startswith("*"))
    days, last, nth = parsed[_DOM].values, parsed[_DOM].last, parsed[_DOW].nth
    months = parsed[_MONTH].values
    dom_never = (
        not last
        and days[0] > 28  # the quick check: every month has days 1-28
        and days[0] > max(_MONTH_DAYS[m - 1] for m in months)
    )
    if dom_never and not day_or:
        words = " or ".join(_MONTH_WORDS[m - 1] for m in months)
        raise ScheduleError(expr, f"never fires (there is no day {min(days)} in {words})")
    recipe: tuple[tuple[tuple[str, ...], bool], ...] = ()
    if last or nth:  # croniter's: fields as explicit lists (see the module's docstring)
        canon = []
        for tok, field in zip(tokens, parsed, strict=True):
            items = [str(v) for v in field.values] + ["l"] * field.last
            nths = [f"{d}#{n}" for d, n in sorted(field.nth)]
            canon.append("*" if tok == "*" else ",".join(items + nths))
        first = 1 if implicit_seconds else 0
        dom_side = (*canon[first:_DOW], "*")
        dow_side = (*canon[first:_DOM], "*", *canon[_MONTH:])
        if day_or and dom_never:
            recipe = ((dow_side, False),)
        elif day_or and nth:  # croniter AND-s '#' with the day of month: split it
            recipe = ((dom_side, False), (dow_side, False))
        else:
            recipe = ((tuple(canon[first:]), day_or),)
    spec = _Spec(
        expr,
        tuple(tokens),
        tuple(p.set for p in parsed),
        not (tokens[0].startswith("*") or tokens[1].startswith("*") or tokens[2].startswith("*")),
        day_or,
        None if recipe else tuple(p.values for p in parsed),
        recipe,
        parts=[] if recipe else None,
        lock=threading.Lock() if recipe else None,
    )
    # Plain fields always match some date once the day-of-month check above passed; 'L' and
    # '#' days are checked by asking croniter, which builds (and checks) its objects.
    if spec.parts is not None and spec.next_wall(_PROBE_FROM) is None:
        raise ScheduleError(expr, "never fires (no date in 50 years matches it)")
    return spec


# --------------------------------------------------------------------------- describing


_MONTH_WORDS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_DAY_WORDS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_ORDINALS = ("first", "second", "third", "fourth", "fifth")


def _join(words: Sequence[str], conj: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conj} {words[-1]}"


def _every(token: str, unit: str) -> str | None:
    """``every minute`` for ``*``, ``every 5 minutes`` for ``*/5``, else None."""
    step = token[2:] if token.startswith("*/") else "1" if token == "*" else ""
    if not step.isdigit():
        return None
    return f"every {unit}" if int(step) == 1 else f"every {int(step)} {unit}s"


def _clock(seconds: int, with_seconds: bool) -> str:
    h, rest = divmod(seconds, 3600)
    text = f"{h:02d}:{rest // 60:02d}"
    return f"{text}:{rest % 60:02d}" if with_seconds else text


def _named(index: int, token: str) -> str:
    """A month or weekday field in words (``Monday through Friday``), or as written."""
    field, words = _FIELDS[index], (_MONTH_WORDS if index == _MONTH else _DAY_WORDS)

    def word(text: str) -> str:
        return words[(_value(token, field, token, text) - field.base) % len(words)]

    out = []
    for item in token.split(","):
        if "/" in item:
            return f"{field.name} {token}"
        if "#" in item:
            day, _, n = item.partition("#")
            out.append(f"the {_ORDINALS[int(n) - 1]} {word(day)} of the month")
        elif "-" in item:
            a, _, b = item.partition("-")
            out.append(f"{word(a)} through {word(b)}")
        else:
            out.append(word(item))
    return _join(out)


def _describe_spec(spec: _Spec) -> str:
    sec, minute, hour, dom, month, dow = spec.tokens
    secs, mins, hours = spec.sets[:3]
    every_minute = _every(minute, "minute")
    every_hour = _every(hour, "hour")
    if spec.fixed and len(secs) * len(mins) * len(hours) <= 4:
        times = sorted(h * 3600 + m * 60 + s for h in hours for m in mins for s in secs)
        when = "at " + _join([_clock(t, secs != {0}) for t in times])
    elif minute == hour == "*" and (every_second := _every(sec, "second")):
        when = every_second
    elif secs == {0} and every_minute and hour == "*":
        when = every_minute
    elif secs == {0} and len(mins) == 1 and every_hour:
        when = every_hour + (f" at minute {minute}" if mins != {0} else "")
    elif secs == {0} and every_minute:
        when = f"{every_minute} during hour {hour}"
    else:
        when = ("at " if secs == {0} else f"at second {sec}, ") + f"minute {minute}, hour {hour}"
    days = "the last day of the month" if dom.upper() == "L" else f"day {dom} of the month"
    weekdays = "" if dow == "*" else _named(_DOW, dow)
    if dom != "*" and dow != "*":
        when += f" on {days} or on {weekdays}" if spec.day_or else f" on {weekdays} if it is {days}"
    elif dom != "*" or dow != "*":
        when += f" on {days if dom != '*' else weekdays}"
    elif spec.fixed:
        when += " every day"
    if month != "*":
        when += f" in {_named(_MONTH, month)}"
    return when


def _zone_suffix(zone: ZoneInfo) -> str:
    return "" if zone.key in ("UTC", "Etc/UTC") else f" ({zone.key or zone})"


# --------------------------------------------------------------------------- schedules


class CronSchedule:
    """The union of the slots of one or more cron expressions, in the zone ``tz``."""

    kind = "cron"

    def __init__(self, expressions: str | Sequence[str], tz: str | ZoneInfo = "UTC") -> None:
        texts = (expressions,) if isinstance(expressions, str) else tuple(expressions)
        if not texts:
            raise ScheduleError(expressions, "no cron expression given")
        for text in texts:
            if not isinstance(text, str):
                raise ScheduleError(text, "a cron expression must be a string")
        self._written: str | list[str] = texts[0] if isinstance(expressions, str) else list(texts)
        self.tz = get_zone(tz)
        self._specs = tuple(_compile(text) for text in texts)
        self._segment = _NO_SEGMENT
        #: The last ``(after, next_after(after))``: jobs sharing this schedule ask for the
        #: same ``after`` at start-up (replaced whole, so threads see a consistent pair).
        self._asked: tuple[datetime | None, datetime | None] = (None, None)

    def __repr__(self) -> str:
        return f"CronSchedule({self._written!r}, tz={self.tz.key!r})"

    def expression(self) -> str | list[str]:
        return self._written if isinstance(self._written, str) else list(self._written)

    def describe(self) -> str:
        return "; ".join(_describe_spec(s) for s in self._specs) + _zone_suffix(self.tz)

    @functools.cached_property
    def min_interval(self) -> timedelta:
        """Shortest gap between two times of day (DST transitions can shorten a real gap)."""
        times: set[int] = set()
        for spec in self._specs:
            secs, mins, hours = spec.sets[:3]
            times.update(h * 3600 + m * 60 + s for h in hours for m in mins for s in secs)
        ordered = sorted(times)
        gaps = [b - a for a, b in itertools.pairwise(ordered)]
        return timedelta(seconds=min([*gaps, ordered[0] + _DAY_SECONDS - ordered[-1]]))

    def next_after(self, after: datetime) -> datetime | None:
        asked, answer = self._asked
        # The same instant: with the same zone, equal fields and fold (datetimes of one zone
        # compare equal by their fields alone, a fall-back's two 02:30s too).
        if (
            asked is not None
            and asked.tzinfo is after.tzinfo
            and asked == after
            and asked.fold == after.fold
        ):
            return answer
        u = _utc_naive(after)
        try:
            if len(self._specs) == 1:
                found = self._next(self._specs[0], u)
            else:
                found_all = (self._next(spec, u) for spec in self._specs)
                slots = [slot for slot in found_all if slot is not None]
                found = min(slots, default=None)
        except (OverflowError, ValueError):  # past year 9999
            return None
        answer = None if found is None else _aware(found)
        self._asked = (after, answer)
        return answer

    def _next(self, spec: _Spec, u: datetime) -> datetime | None:
        """First slot of ``spec`` after ``u`` (naive UTC, whole seconds).

        One stretch of constant offset at a time; from the second stretch on the search is
        inclusive of the stretch's first second. ``found`` is the first match after ``last``,
        so it still answers a later search from a wall in ``[last, found)``.
        """
        inclusive = False
        last, found = datetime.max, datetime.min
        while True:
            seg = self._segment
            if not seg.start <= u < seg.end:
                seg = self._segment = _shared_segment(self.tz, u)
            off = seg.offset
            if spec.fixed and seg.repeat_end is not None and u < seg.repeat_end:
                wall = seg.repeat_end + off - _SECOND  # skip second occurrences after a fall-back
            else:
                wall = u + off - _SECOND if inclusive else u + off
            if not last <= wall < found:
                next_wall = spec.next_wall(wall)
                if next_wall is None:
                    return None
                last, found = wall, next_wall
            instant = found - off
            if instant < seg.end:
                return instant
            new = seg.next_offset
            if spec.fixed and new is not None and new > off and found < seg.end + new:
                return seg.end  # in the spring-forward gap: once, at the transition
            u, inclusive = seg.end, True


class EverySchedule:
    """Slots ``anchor + n * interval`` for n >= 0 (anchor: the Unix epoch unless given)."""

    kind = "every"

    def __init__(
        self, interval: timedelta | str | int | float, anchor: datetime | None = None
    ) -> None:
        self.interval = parse_duration(interval, what="interval")
        if self.interval % _SECOND:
            raise ScheduleError(interval, "interval must be a whole number of seconds")
        if anchor is None:
            self._anchor = _EPOCH
        elif anchor.tzinfo is None:  # naive: UTC
            self._anchor = anchor.replace(microsecond=0)
        else:
            self._anchor = _utc_naive(anchor, "anchor")
        self.tz = _UTC_ZONE

    def __repr__(self) -> str:
        return f"EverySchedule({self.interval!r}, anchor={self.anchor.isoformat()!r})"

    @property
    def anchor(self) -> datetime:
        return _aware(self._anchor)

    @property
    def min_interval(self) -> timedelta:
        return self.interval

    def expression(self) -> int:
        return int(self.interval.total_seconds())

    def describe(self) -> str:
        seconds = int(self.interval.total_seconds())
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
            if seconds % size == 0:
                n = seconds // size
                text = f"every {unit}" if n == 1 else f"every {n} {unit}s"
                break
        if self._anchor != _EPOCH:
            text += f" from {self._anchor:%Y-%m-%d %H:%M:%S} UTC"
        return text

    def next_after(self, after: datetime) -> datetime | None:
        u = _utc_naive(after)
        if u < self._anchor:
            return self.anchor
        try:
            return _aware(self._anchor + ((u - self._anchor) // self.interval + 1) * self.interval)
        except OverflowError:
            return None


class AtSchedule:
    """One slot at ``when``: an aware datetime or ISO 8601 text; naive means wall time in ``tz``.

    A naive time in a spring-forward gap means the transition, one in an overlap its first
    occurrence (as for fixed-time cron jobs). Microseconds are dropped.
    """

    kind = "at"

    def __init__(self, when: datetime | str, tz: str | ZoneInfo | None = None) -> None:
        if isinstance(when, str):
            try:
                moment = datetime.fromisoformat(when.strip())
            except ValueError:
                raise ScheduleError(when, "not an ISO 8601 date and time") from None
        elif isinstance(when, datetime):
            moment = when
        else:
            raise ScheduleError(when, "must be a datetime or an ISO 8601 string")
        if tz is None and isinstance(moment.tzinfo, ZoneInfo):
            tz = moment.tzinfo
        self.tz = get_zone(tz)
        if moment.tzinfo is None:
            wall = moment.replace(microsecond=0)
            instant = _utc_naive(wall.replace(tzinfo=self.tz))
            if _aware(instant).astimezone(self.tz).replace(tzinfo=None) != wall:
                instant = _segment(self.tz, _utc_naive(wall.replace(tzinfo=self.tz, fold=1))).end
        else:
            instant = _utc_naive(moment, "when")
        self.when = _aware(instant)

    def __repr__(self) -> str:
        return f"AtSchedule({self.when.isoformat()!r}, tz={self.tz.key!r})"

    @property
    def min_interval(self) -> None:
        return None

    def expression(self) -> str:
        return self.when.astimezone(self.tz).isoformat()

    def describe(self) -> str:
        local = self.when.astimezone(self.tz)
        clock = f"{local:%H:%M:%S}" if local.second else f"{local:%H:%M}"
        return f"once at {local:%Y-%m-%d} {clock} {self.tz.key or local.tzname()}"

    def next_after(self, after: datetime) -> datetime | None:
        return self.when if _aware(_utc_naive(after)) < self.when else None


# --------------------------------------------------------------------------- helpers


def parse_expression(text: str, tz: str | ZoneInfo = "UTC") -> Schedule:
    """A schedule from CLI text: a cron expression or alias, ``every:5m``, ``at:ISO``."""
    stripped = text.strip()
    prefix, sep, rest = stripped.partition(":")
    kind = prefix.strip().lower() if sep else ""
    if kind == "every":
        return EverySchedule(rest.strip())
    if kind == "at":
        return AtSchedule(rest.strip(), tz=tz)
    return CronSchedule(rest.strip() if kind == "cron" else stripped, tz)


def iter_slots(
    schedule: Schedule, after: datetime, until: datetime, limit: int | None = None
) -> Iterator[datetime]:
    """The slots in ``(after, until]``, oldest first, at most ``limit`` of them."""
    count = 0
    current = after
    while limit is None or count < limit:
        slot = schedule.next_after(current)
        if slot is None or slot > until:
            return
        yield slot
        count += 1
        current = slot


def jitter_delay(
    job: str, slot: datetime, max_seconds: float, interval: timedelta | None = None
) -> float:
    """Seconds in ``[0, max_seconds)`` (and below ``interval``) from sha256 of job and slot.

    The same on every machine and process: the slot is hashed as its UTC ISO 8601 text.
    """
    bound = float(max_seconds)
    if interval is not None:
        bound = min(bound, interval.total_seconds())
    if not bound > 0:
        return 0.0
    utc = slot.astimezone(UTC) if slot.tzinfo is not None else None
    if utc is None:
        raise ValueError(f"slot must be an aware datetime, got {slot.isoformat()}")
    digest = hashlib.sha256(f"{job}\n{utc.isoformat()}".encode()).digest()
    delay = (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53) * bound
    return delay if delay < bound else math.nextafter(bound, 0.0)
