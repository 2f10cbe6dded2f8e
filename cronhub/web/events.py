"""Live events: an in-process bus with a replay buffer, served as Server-Sent Events.

``GET /api/events`` streams what happens to runs and jobs, one SSE event each::

    id: 1767571200001
    event: run.finished
    data: {"run": {"id": 42, "job": "nightly", "status": "succeeded", ...}}

Kinds: ``run.queued`` (run-now), ``run.started``, ``run.finished`` (data ``{"run": run
object}``), ``job.paused``, ``job.resumed`` (data ``{"job": job object}``), and ``reset`` (data
``{"reason": ...}``) when a client resumes from an event this process no longer holds (it
restarted, or the client was away for more than the buffer): the client should then fetch the
state again instead of relying on the events it missed.

Ids are integers that only grow; they start at the process's start time in milliseconds, so a
client reconnecting to a restarted server is not mistaken for an up-to-date one. A client
sends the last id it saw as ``Last-Event-ID`` (browsers' ``EventSource`` does it on its own)
and receives the buffered events after it. A comment line (``: keep-alive``) is sent when
nothing happened for ``keepalive`` seconds, so proxies keep the connection open.

The bus is fed from the event loop's thread (the engine's ``cronhub_run_started`` and
``cronhub_run_finished`` hooks, the API's actions, other instances' events forwarded from the
storage); :meth:`EventBus.publish` is not thread-safe, use :meth:`EventBus.publish_soon` from
other threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

log = logging.getLogger("cronhub.web")

#: Event kinds with a run as data; the others carry a job.
RUN_EVENTS = frozenset({"run.queued", "run.started", "run.finished"})
JOB_EVENTS = frozenset({"job.paused", "job.resumed"})
#: Sent instead of a replay when the events after the client's id are gone.
RESET = "reset"
#: How long a browser waits before reconnecting after the stream ends (milliseconds).
RECONNECT_MS = 3000


@dataclass(frozen=True, slots=True)
class Event:
    """One published event."""

    id: int
    kind: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        """The event in the SSE wire format (``data`` is one line of JSON)."""
        # json.dumps escapes newlines inside strings, so the data is always a single line.
        payload = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {payload}\n\n".encode()


class Subscription:
    """One client's queue of events; iterate it to receive them, ``None`` ends it."""

    def __init__(self, bus: EventBus, size: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(size)
        #: Set when the client fell too far behind and was dropped.
        self.overflowed = False

    def put(self, event: Event | None) -> bool:
        """Queue ``event``; ``False`` when the queue is full (the client is too slow)."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True

    async def get(self, timeout: float) -> Event | None:
        """The next event; raises :class:`TimeoutError` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._bus._subscribers.discard(self)


class EventBus:
    """Publishes events to every subscriber and keeps the last ``buffer`` for replay.

    :param buffer: How many events are kept for clients that reconnect with ``Last-Event-ID``.
    :param keepalive: Seconds without events after which a stream sends a comment line.
    :param first_id: The first event's id (default: the current time in milliseconds).
    :param queue_size: Events a slow client may lag behind before it is disconnected; it then
        reconnects and is replayed what the buffer still holds.
    """

    def __init__(
        self,
        *,
        buffer: int = 1000,
        keepalive: float = 15.0,
        first_id: int | None = None,
        queue_size: int = 1000,
    ) -> None:
        if keepalive <= 0:
            raise ValueError(f"keepalive must be > 0 seconds, not {keepalive!r}")
        self.keepalive = keepalive
        self._next_id = int(time.time() * 1000) if first_id is None else first_id
        self._buffer: deque[Event] = deque(maxlen=buffer)
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        # (kind, run id) of recent run events: a run reported twice (by a hook and by the
        # storage, or by the API and a hook) is published once.
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    # -- publishing ----------------------------------------------------------------------
    @property
    def last_id(self) -> int:
        """The id of the newest event (one less than the next one's)."""
        return self._next_id - 1

    def publish(self, kind: str, data: dict[str, Any]) -> Event | None:
        """Publish an event now (from the event loop's thread); ``None`` if it is a repeat."""
        if self.closed:
            return None
        if kind in RUN_EVENTS:
            run_id = data.get("run", {}).get("id")
            if isinstance(run_id, int):
                key = (kind, run_id)
                if key in self._seen:
                    return None
                self._seen[key] = None
                while len(self._seen) > 10_000:
                    self._seen.popitem(last=False)
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        event = Event(self._next_id, kind, data)
        self._next_id += 1
        self._buffer.append(event)
        for subscriber in list(self._subscribers):
            if not subscriber.put(event):
                # Too slow: end its stream; it reconnects and gets a replay (or a reset).
                self._subscribers.discard(subscriber)
                log.warning(
                    "event stream client fell %d events behind; disconnecting it", self._queue_size
                )
        return event

    def publish_soon(self, kind: str, data: dict[str, Any]) -> None:
        """Publish from any thread (the event loop must have published or subscribed once)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self.publish, kind, data)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the event loop that :meth:`publish_soon` hands events to."""
        self._loop = loop

    # -- subscribing ---------------------------------------------------------------------
    def subscribe(self, last_id: int | None = None) -> tuple[Subscription, list[Event]]:
        """A new subscription, and what to send first: a replay after ``last_id``, or a reset.

        With ``last_id``, the buffered events after it are returned; if events after it are
        no longer buffered (or the id is not one of this process's), a single ``reset`` event.
        """
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        subscription = Subscription(self, self._queue_size)
        if not self.closed:
            self._subscribers.add(subscription)
        first: list[Event] = []
        if last_id is not None and last_id != self.last_id:
            oldest = self._buffer[0].id if self._buffer else self._next_id
            if oldest - 1 <= last_id < self.last_id:
                first = [event for event in self._buffer if event.id > last_id]
            else:
                reason = "events after this id are no longer available; fetch the state again"
                first = [Event(self.last_id, RESET, {"reason": reason, "last_event_id": last_id})]
        return subscription, first

    @property
    def subscribers(self) -> int:
        """How many streams are open."""
        return len(self._subscribers)

    def close(self) -> None:
        """End every stream (server shutdown) and refuse new events."""
        self.closed = True
        for subscriber in list(self._subscribers):
            subscriber.put(None)
        self._subscribers.clear()


async def _stream(
    bus: EventBus, subscription: Subscription, first: list[Event]
) -> AsyncIterator[bytes]:
    try:
        # The retry field tells EventSource how long to wait before reconnecting; the
        # comment makes the server send its headers at once.
        yield f"retry: {RECONNECT_MS}\n: connected\n\n".encode()
        for event in first:
            yield event.encode()
        while not bus.closed:
            try:
                event = await subscription.get(bus.keepalive)
            except TimeoutError:
                if subscription.overflowed:
                    return
                yield b": keep-alive\n\n"
                continue
            if event is None:
                return
            yield event.encode()
    finally:
        subscription.close()


def parse_last_event_id(value: str | None) -> int | None:
    """The integer of a ``Last-Event-ID`` header; :class:`ValueError` when it is not one."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 19:
        raise ValueError(f"Last-Event-ID {value[:40]!r} is not an event id of this server")
    return int(text)


def event_stream(bus: EventBus, last_event_id: str | None) -> Response:
    """The SSE response of ``GET /api/events`` (400 JSON for a malformed ``Last-Event-ID``)."""
    try:
        last_id = parse_last_event_id(last_event_id)
    except ValueError as exc:
        return JSONResponse(
            {"error": "bad Last-Event-ID header", "detail": str(exc)}, status_code=400
        )
    subscription, first = bus.subscribe(last_id)
    return StreamingResponse(
        _stream(bus, subscription, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
