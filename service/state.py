"""The long-lived objects of one API process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from celery import Celery

from models.artifacts import ArtifactStore
from models.records import Records
from models.sampling import ModelCache
from models.settings import Settings
from service.celery_client import make_sender


@dataclass
class Services:
    settings: Settings
    records: Records
    store: ArtifactStore
    sender: Celery
    cache: ModelCache

    @classmethod
    def create(cls, settings: Settings) -> Services:
        return cls(
            settings=settings,
            records=Records(settings.DATABASE_URL),
            store=ArtifactStore(settings.ARTIFACT_ROOT, cache_dir=Path(settings.WORK_ROOT) / "cache"),
            sender=make_sender(settings),
            cache=ModelCache(settings.MODEL_CACHE_SIZE),
        )

    def close(self) -> None:
        self.records.dispose()
        self.cache.clear()
        self.sender.close()
