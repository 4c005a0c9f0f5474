"""Dependencies of the routers, as Annotated aliases.

They are `async def` because they only read attributes: FastAPI runs a plain `def` dependency
on a worker thread, one hop each (about 0.1 ms apiece, more under load), and a sampling
request used to take seven of them before its endpoint ran."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Request

from gan_platform.artifacts import ArtifactStore
from gan_platform.records import Records
from gan_platform.settings import Settings
from service.samples import RowsInFlight
from service.state import Services
from serving.sampling import ModelCache


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings_dep(services: ServicesDep) -> Settings:
    return services.settings


async def get_records(services: ServicesDep) -> Records:
    return services.records


async def get_store(services: ServicesDep) -> ArtifactStore:
    return services.store


async def get_sender(services: ServicesDep) -> Celery:
    return services.sender


async def get_cache(services: ServicesDep) -> ModelCache:
    return services.cache


async def get_rows(services: ServicesDep) -> RowsInFlight:
    return services.rows


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RecordsDep = Annotated[Records, Depends(get_records)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
SenderDep = Annotated[Celery, Depends(get_sender)]
CacheDep = Annotated[ModelCache, Depends(get_cache)]
RowsDep = Annotated[RowsInFlight, Depends(get_rows)]
