"""Server-sent event streams of jobs: one poller per watched job, a cap per API key.

Every stream of one job reads what a single feed fetched from the database, so a hundred
streams of a job cost the database one query per poll, not a hundred; a feed lives while
someone watches its job. An API key may hold at most `per_key` streams at once (429 beyond).
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool

from gan_platform.records import TERMINAL
from service.problems import Problem

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
EVENTS_PER_QUERY = 1000


class FeedSource(Protocol):
    """What a feed polls: a job's events after an id, and the job (Records for training jobs;
    service.sampling_jobs.SamplingFeed for batch sampling jobs)."""

    def events_since(self, job_id: str, after_id: int = 0, limit: int = 1000) -> list[dict]:
        ...

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        ...


@dataclass
class _Feed:
    job_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    job: dict[str, Any] | None = None
    version: int = 0
    ended: bool = False
    watchers: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None


class EventHub:
    def __init__(self, records: FeedSource, per_key: int, poll: float = POLL_SECONDS,
                 render_event: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.records = records
        self.per_key = per_key
        self.poll = poll
        self.render_event = render_event or progress_event
        self._feeds: dict[str, _Feed] = {}
        self._streams: dict[str | None, int] = {}

    def sibling(self, records: FeedSource, render_event: Callable[[dict[str, Any]], str]
                ) -> EventHub:
        """A hub for another kind of job (its own feeds and events) whose streams count
        against this hub's per-key cap: one MAX_EVENT_STREAMS_PER_KEY for all streams."""
        hub = EventHub(records, self.per_key, self.poll, render_event)
        hub._streams = self._streams
        return hub

    # --- the feed: one per job ----------------------------------------------------------------

    async def _fetch(self, feed: _Feed) -> None:
        after = feed.events[-1]["id"] if feed.events else 0
        while True:
            batch = await run_in_threadpool(self.records.events_since, feed.job_id, after,
                                            EVENTS_PER_QUERY)
            feed.events.extend(batch)
            if len(batch) < EVENTS_PER_QUERY:
                return
            after = batch[-1]["id"]

    async def _run(self, feed: _Feed) -> None:
        try:
            while feed.watchers:
                await self._fetch(feed)
                feed.job = await run_in_threadpool(self.records.get_job, feed.job_id)
                if feed.job is None or feed.job["status"] in TERMINAL:
                    await self._fetch(feed)  # events written between the two reads above
                    feed.ended = True
                async with feed.changed:
                    feed.version += 1
                    feed.changed.notify_all()
                if feed.ended:
                    return
                await asyncio.sleep(self.poll)
        finally:
            feed.ended = True
            async with feed.changed:
                feed.changed.notify_all()
            if self._feeds.get(feed.job_id) is feed:
                del self._feeds[feed.job_id]

    def _join(self, job_id: str) -> _Feed:
        feed = self._feeds.get(job_id)
        if feed is None or feed.ended:
            feed = _Feed(job_id)
            self._feeds[job_id] = feed
        feed.watchers += 1
        if feed.task is None:
            feed.task = asyncio.create_task(self._run(feed))
        return feed

    @property
    def feeds(self) -> int:
        """Jobs being polled now (one feed each, whatever the number of their streams)."""
        return len(self._feeds)

    def streams_of(self, key: str | None) -> int:
        return self._streams.get(key, 0)

    # --- the streams ------------------------------------------------------------------------

    def open(self, job_id: str, after: int, key: str | None,
             disconnected: Callable[[], Any], render_job: Callable[[dict[str, Any]], str]
             ) -> AsyncIterator[str]:
        """The SSE text of job `job_id` after event id `after`: progress events, a status
        event on each change, keep-alives, and an `end` event with the final job. 429 when
        `key` holds `per_key` streams already."""
        if key is not None and self._streams.get(key, 0) >= self.per_key:
            raise Problem(429, f"this API key has {self._streams[key]} event streams open; at "
                          f"most {self.per_key} (MAX_EVENT_STREAMS_PER_KEY)",
                          title="Too many event streams", type="too-many-streams",
                          headers={"Retry-After": "5"})
        self._streams[key] = self._streams.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._streams.get(key, 1) - 1
                if left:
                    self._streams[key] = left
                else:
                    self._streams.pop(key, None)

        stream = self._stream(job_id, after, disconnected, render_job, release)
        # A stream whose response never started (the client left first) is never iterated,
        # so its `finally` never runs: its slot comes back when it is collected.
        weakref.finalize(stream, release)
        return stream

    async def _stream(self, job_id: str, after: int, disconnected: Callable[[], Any],
                      render_job: Callable[[dict[str, Any]], str],
                      release: Callable[[], None]) -> AsyncIterator[str]:
        feed = self._join(job_id)
        try:
            yield "retry: 2000\n\n"
            cursor, seen, last_status = after, 0, None
            while True:
                async with feed.changed:
                    try:
                        await asyncio.wait_for(
                            feed.changed.wait_for(partial(_news, feed, seen)),
                            KEEPALIVE_SECONDS)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        if await disconnected():
                            return
                        continue
                    seen = feed.version
                for event in feed.events:
                    if event["id"] > cursor:
                        cursor = event["id"]
                        yield self.render_event(event)
                job = feed.job
                if job is None:
                    return
                if feed.ended:
                    yield f"event: end\ndata: {render_job(job)}\n\n"
                    return
                if job["status"] != last_status:
                    last_status = job["status"]
                    yield f"event: status\ndata: {render_job(job)}\n\n"
                if await disconnected():
                    return
        finally:
            feed.watchers -= 1
            release()


def _news(feed: _Feed, seen: int) -> bool:
    return feed.version > seen or feed.ended


def progress_event(ev: dict[str, Any]) -> str:
    data = {"step": ev["step"], "total_steps": ev["total_steps"], "losses": ev["losses"],
            "metrics": ev["metrics"], "attempt": ev["attempt"]}
    return f"id: {ev['id']}\nevent: progress\ndata: {json.dumps(data)}\n\n"
