"""The long-lived objects of one API process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from celery import Celery

from gan_platform.artifacts import ArtifactStore
from gan_platform.records import Records
from gan_platform.settings import Settings
from service.celery_client import make_sender
from service.events import EventHub
from service.samples import RowsInFlight
from service.sampling_jobs import SamplingFeed, chunk_event
from serving.sampling import ModelCache


@dataclass
class Services:
    settings: Settings
    records: Records
    store: ArtifactStore
    sender: Celery
    cache: ModelCache
    rows: RowsInFlight  # the sampling rows in flight (MAX_SAMPLING_ROWS_*)
    events: EventHub  # one poller per watched job for the event streams
    # The batch sampling jobs' streams: their own feeds, the same per-key cap.
    sampling_events: EventHub

    @classmethod
    def create(cls, settings: Settings) -> Services:
        records = Records(settings.DATABASE_URL)
        events = EventHub(records, per_key=settings.MAX_EVENT_STREAMS_PER_KEY)
        return cls(
            settings=settings,
            records=records,
            store=ArtifactStore(settings.ARTIFACT_ROOT, cache_dir=Path(settings.WORK_ROOT) / "cache"),
            sender=make_sender(settings),
            cache=ModelCache(settings.MODEL_CACHE_SIZE),
            rows=RowsInFlight(settings.MAX_SAMPLING_ROWS_IN_FLIGHT,
                              settings.MAX_SAMPLING_ROWS_PER_KEY),
            events=events,
            sampling_events=events.sibling(SamplingFeed(records), chunk_event),
        )

    def close(self) -> None:
        self.records.dispose()
        self.cache.clear()
        self.sender.close()
