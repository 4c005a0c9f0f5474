"""Durable state: jobs, models, uploads and the progress history, in SQL (SQLAlchemy Core).

Torch-free: the API imports it. SQLite by default, PostgreSQL when the URL says so. The
database is the authority on every job: a worker runs a job only after it has claimed it
here with an atomic UPDATE (a lease it must keep renewing), and every later write of that
worker is fenced by its lease token, so a worker that lost its lease cannot overwrite the
state of the worker that took the job over.

Timestamps are stored as naive UTC and returned timezone-aware.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    DefaultClause,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, RowMapping, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

# A job's status: written once, here; the API's schemas use the same Literal.
Status = Literal["queued", "running", "succeeded", "failed", "cancelling", "cancelled"]
STATUSES: tuple[str, ...] = get_args(Status)
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED = STATUSES
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE = (QUEUED, RUNNING, CANCELLING)
PRIVATE, SHARED = "private", "shared"
NO_LEASE: dict[str, Any] = {"lease_owner": None, "lease_until": None}  # a job no one holds
VISIBILITIES = (PRIVATE, SHARED)

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("status", String(16), nullable=False, index=True),
    Column("spec", JSON, nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("progress", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("model_id", String(36), nullable=True),
    Column("owner", String(255), nullable=True, index=True),  # for a later auth issue
    Column("idempotency_key", String(255), nullable=True, unique=True),
    Column("attempts", Integer, nullable=False, default=0),  # claims by a worker
    Column("lease_owner", String(255), nullable=True),  # the claim's fencing token
    Column("lease_until", DateTime, nullable=True),
    Column("enqueued_at", DateTime, nullable=True),  # last time a message was sent for it
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
)

models = Table(
    "models",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", String(36), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("metadata", JSON, nullable=False),
    Column("onnx_uri", Text, nullable=False),
    Column("onnx_sha256", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    # "private": only the owner of its job (and admins) see it; "shared": every sample key.
    Column("visibility", String(16), nullable=False, server_default=PRIVATE),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(36), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("total_steps", Integer, nullable=False),
    Column("losses", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

# One row per job owner, locked by every submission of that owner: the count of its active
# jobs and the insert of a new one are then one atomic step (MAX_QUEUED_JOBS_PER_KEY).
owner_locks = Table(
    "owner_locks",
    metadata,
    Column("owner", String(255), primary_key=True),
    Column("submissions", Integer, nullable=False, default=0),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("filename", String(255), nullable=False),
    Column("artifact_uri", Text, nullable=False),
    Column("format", String(32), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("owner", String(255), nullable=True),
    Column("created_at", DateTime, nullable=False),
)

# Batch sampling jobs (docs/how-to/batch-sampling.md): a job is planned by one worker (a
# lease on the job row, as a training job's), which cuts its rows into chunks; each chunk is
# claimed, leased and fenced on its own row, by any worker. Rows counts are BigInteger.
sampling_jobs = Table(
    "sampling_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("model_id", String(36), ForeignKey("models.id"), nullable=False, index=True),
    Column("owner", String(255), nullable=True, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("request", JSON, nullable=False),  # the body as accepted (the seed chosen)
    Column("seed", BigInteger, nullable=False),
    Column("chunk_rows", Integer, nullable=False),
    Column("total_rows", BigInteger, nullable=True),  # known once planned
    Column("chunks_total", Integer, nullable=True),
    Column("rows_done", BigInteger, nullable=False, default=0),
    Column("chunks_done", Integer, nullable=False, default=0),
    Column("plan", JSON, nullable=True),  # the columns and where the chunks read them
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),  # claims of the plan
    Column("lease_owner", String(255), nullable=True),  # the planner's fencing token
    Column("lease_until", DateTime, nullable=True),
    Column("enqueued_at", DateTime, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
)

sampling_chunks = Table(
    "sampling_chunks",
    metadata,
    Column("job_id", String(36), ForeignKey("sampling_jobs.id"), primary_key=True),
    Column("chunk", Integer, primary_key=True, autoincrement=False),
    Column("start", BigInteger, nullable=False),
    Column("stop", BigInteger, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_until", DateTime, nullable=True),
    Column("enqueued_at", DateTime, nullable=True),
    Column("shard_key", Text, nullable=True),  # its Parquet shard in the artifact store
    Column("shard_bytes", BigInteger, nullable=True),
    Column("shard_sha256", String(64), nullable=True),
    Column("done_by", String(255), nullable=True),  # the token of the claim that finished it
    Column("seq", Integer, nullable=True),  # n-th chunk of its job to finish: the event id
    Column("error", Text, nullable=True),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
)


def utcnow() -> datetime:
    """Naive UTC, as stored."""
    return datetime.now(UTC).replace(tzinfo=None)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row(row: RowMapping | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: _aware(v) if isinstance(v, datetime) else v for k, v in row.items()}


def normalise_url(url: str) -> str:
    """postgresql:// uses psycopg 3 (installed), not psycopg2 (SQLAlchemy's default)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL: the API reads while a worker writes. Several processes share the file.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


class QuotaExceeded(Exception):
    """create_job: the owner already has `active` queued or running jobs."""

    def __init__(self, active: int) -> None:
        super().__init__(f"{active} active jobs")
        self.active = active


@dataclass(frozen=True)
class Reaped:
    requeued: list[str]  # lease expired: back to queued, to be re-sent
    failed: list[str]  # lease expired for the MAX_ATTEMPTS-th time
    cancelled: list[str]  # lease expired while cancelling


@dataclass(frozen=True)
class SamplingReaped:
    """What `Records.reap_sampling` did; the caller re-sends the first two."""

    plans: list[str]  # a planner's lease lapsed: the job is queued again
    chunks: list[tuple[str, int]]  # a chunk's lease lapsed: (job id, chunk) queued again
    failed: list[str]  # jobs failed: a lease lapsed for the MAX_ATTEMPTS-th time
    cancelled: list[tuple[str, int]]  # chunks of a job no longer running: cancelled


class Records:
    """Every read and write of the service's state. One instance per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._create_tables()

    def _create_tables(self) -> None:
        # Several processes may start at once: a concurrent CREATE loses the race harmlessly.
        for attempt in range(3):
            try:
                metadata.create_all(self.engine)
                self._add_missing_columns()
                return
            except (IntegrityError, DBAPIError):
                if attempt == 2:
                    raise

    def _add_missing_columns(self) -> None:
        """Columns added since a database was created (ALTER TABLE ADD COLUMN with their
        server default), so that an existing var/gan.db keeps working."""
        existing = inspect(self.engine)
        for table in metadata.sorted_tables:
            have = {c["name"] for c in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                kind = column.type.compile(dialect=self.engine.dialect)
                # The tables' server defaults are all given as strings: DefaultClause.
                server_default = cast("DefaultClause | None", column.server_default)
                default = server_default.arg if server_default is not None else None
                ddl = f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'
                if default is not None:
                    ddl += f" NOT NULL DEFAULT '{default}'"
                with self._tx() as conn:
                    conn.execute(text(ddl))

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """A round trip to the database (raises when it is unreachable)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def count_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
            return {str(status): int(n) for status, n in rows.all()}

    def live_leases(self) -> int:
        """Running jobs whose worker renewed its lease in time: a worker is alive."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(jobs).where(
                jobs.c.status == RUNNING, jobs.c.lease_until > utcnow())).scalar_one())

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # --- jobs: the API's side ------------------------------------------------------------------

    def create_job(
        self,
        spec: dict[str, Any],
        spec_hash: str,
        *,
        idempotency_key: str | None = None,
        owner: str | None = None,
        max_active: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """(job, created). With an idempotency key already used, the existing job.

        `max_active`: raise QuotaExceeded when `owner` already has that many queued, running or
        cancelling jobs. Checked and inserted in one transaction that holds the owner's lock
        row, so concurrent submissions of one owner cannot all pass the check."""
        if idempotency_key is not None:
            existing = self.job_by_idempotency_key(idempotency_key)
            if existing is not None:
                return existing, False
        job_id = str(uuid.uuid4())
        now = utcnow()
        if max_active is not None and owner is not None:
            self._ensure_owner_lock(owner)
        try:
            with self._tx() as conn:
                if max_active is not None and owner is not None:
                    # The first statement writes: it takes the lock (SQLite's write lock, a
                    # PostgreSQL row lock) before anything is read.
                    conn.execute(update(owner_locks).where(owner_locks.c.owner == owner)
                                 .values(submissions=owner_locks.c.submissions + 1))
                    active = int(conn.execute(
                        select(func.count()).select_from(jobs).where(
                            jobs.c.owner == owner, jobs.c.status.in_(ACTIVE))).scalar_one())
                    if active >= max_active:
                        raise QuotaExceeded(active)
                conn.execute(
                    insert(jobs).values(
                        id=job_id,
                        status=QUEUED,
                        spec=spec,
                        spec_hash=spec_hash,
                        progress=None,
                        owner=owner,
                        idempotency_key=idempotency_key,
                        attempts=0,
                        enqueued_at=now,
                        created_at=now,
                    )
                )
        except IntegrityError:
            # A concurrent request with the same key won the race.
            if idempotency_key is None:
                raise
            existing = self.job_by_idempotency_key(idempotency_key)
            if existing is None:
                raise
            return existing, False
        job = self.get_job(job_id)
        assert job is not None
        return job, True

    def _ensure_owner_lock(self, owner: str) -> None:
        with self._tx() as conn:
            if conn.execute(select(owner_locks.c.owner).where(
                    owner_locks.c.owner == owner)).first() is not None:
                return
        try:
            with self._tx() as conn:
                conn.execute(insert(owner_locks).values(owner=owner, submissions=0))
        except IntegrityError:
            pass  # a concurrent submission made it

    def job_by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.idempotency_key == key)).mappings()
            return _row(row.first())

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            return _row(conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first())

    def list_jobs(
        self,
        *,
        status: Sequence[str] | None = None,
        owner: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        cond: list[ColumnElement[bool]] = []
        if status:
            cond.append(jobs.c.status.in_(list(status)))
        if owner is not None:
            cond.append(jobs.c.owner == owner)
        where = and_(*cond) if cond else None
        query = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
        count = select(func.count()).select_from(jobs)
        if where is not None:
            query, count = query.where(where), count.where(where)
        with self.engine.connect() as conn:
            rows = [_row(r) for r in conn.execute(query.offset(offset)).mappings()]
            total = int(conn.execute(count).scalar_one())
        return [r for r in rows if r is not None], total

    def mark_enqueued(self, job_id: str) -> None:
        with self._tx() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(enqueued_at=utcnow()))

    def request_cancel(self, job_id: str) -> dict[str, Any] | None:
        """queued -> cancelled at once; running -> cancelling (the worker stops at its next
        step). Terminal jobs are left as they are. None: no such job."""
        now = utcnow()
        with self._tx() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == QUEUED)
                .values(status=CANCELLED, finished_at=now, lease_owner=None, lease_until=None)
            )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == RUNNING)
                .values(status=CANCELLING)
            )
        return self.get_job(job_id)

    def events_since(self, job_id: str, after_id: int = 0, limit: int = 1000) -> list[dict]:
        query = (
            select(job_events)
            .where(job_events.c.job_id == job_id, job_events.c.id > after_id)
            .order_by(job_events.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [r for r in (_row(m) for m in conn.execute(query).mappings()) if r]

    def progress_curve(self, job_id: str) -> list[dict]:
        """Every progress event of a job, one per step (a step logged again after a resume:
        its latest event), in step order."""
        by_step: dict[int, dict] = {}
        after = 0
        while True:
            events = self.events_since(job_id, after, limit=1000)
            for ev in events:
                by_step[int(ev["step"])] = ev
            if len(events) < 1000:
                return [by_step[s] for s in sorted(by_step)]
            after = events[-1]["id"]

    # --- jobs: the worker's side -------------------------------------------------------------

    def claim(
        self, job_id: str, token: str, lease_seconds: float, max_attempts: int
    ) -> dict[str, Any] | None:
        """Atomically take a job that is queued, or running under an expired lease.

        Returns the job when this call won it, else None (another worker has it, or it is
        finished or cancelled: the caller drops its message)."""
        now = utcnow()
        claimable = or_(
            jobs.c.status == QUEUED,
            and_(jobs.c.status == RUNNING, jobs.c.lease_until < now),
        )
        with self._tx() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, claimable, jobs.c.attempts < max_attempts)
                .values(
                    status=RUNNING,
                    lease_owner=token,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    attempts=jobs.c.attempts + 1,
                    started_at=func.coalesce(jobs.c.started_at, now),
                )
            )
            if result.rowcount != 1:
                return None
        return self.get_job(job_id)

    def _fenced(self, job_id: str, token: str) -> Any:
        return and_(
            jobs.c.id == job_id,
            jobs.c.lease_owner == token,
            jobs.c.status.in_([RUNNING, CANCELLING]),
        )

    def _fenced_update(self, conn: Connection, job_id: str, token: str, *where: Any,
                       **values: Any) -> bool:
        """UPDATE the job only while `token` holds its lease: True when it did."""
        result = conn.execute(update(jobs).where(self._fenced(job_id, token), *where)
                              .values(**values))
        return bool(result.rowcount == 1)

    def heartbeat(self, job_id: str, token: str, lease_seconds: float) -> str | None:
        """Extend the lease. Returns the job's status, or None when the lease was lost."""
        until = utcnow() + timedelta(seconds=lease_seconds)
        with self._tx() as conn:
            if not self._fenced_update(conn, job_id, token, lease_until=until):
                return None
            return conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one()

    def record_progress(
        self,
        job_id: str,
        token: str,
        *,
        attempt: int,
        step: int,
        total_steps: int,
        losses: dict[str, float],
        metrics: dict[str, float],
        lease_seconds: float,
    ) -> bool:
        now = utcnow()
        progress = {"step": step, "total_steps": total_steps, "losses": losses, "metrics": metrics}
        with self._tx() as conn:
            if not self._fenced_update(conn, job_id, token, progress=progress,
                                       lease_until=now + timedelta(seconds=lease_seconds)):
                return False
            conn.execute(
                insert(job_events).values(
                    job_id=job_id,
                    attempt=attempt,
                    step=step,
                    total_steps=total_steps,
                    losses=losses,
                    metrics=metrics,
                    created_at=now,
                )
            )
        return True

    def finish_succeeded(
        self,
        job_id: str,
        token: str,
        *,
        model_id: str,
        model_metadata: dict[str, Any],
        onnx_uri: str,
        onnx_sha256: str,
    ) -> bool:
        """Register the model and end the job, in one transaction. A job whose cancel arrived
        after its last step still succeeds: the work is done."""
        now = utcnow()
        with self._tx() as conn:
            if not self._fenced_update(conn, job_id, token, status=SUCCEEDED, model_id=model_id,
                                       finished_at=now, error=None, **NO_LEASE):
                return False
            conn.execute(
                insert(models).values(
                    id=model_id,
                    job_id=job_id,
                    metadata=model_metadata,
                    onnx_uri=onnx_uri,
                    onnx_sha256=onnx_sha256,
                    created_at=now,
                )
            )
        return True

    def finish(self, job_id: str, token: str, status: str, error: str | None = None) -> bool:
        """End a claimed job as failed or cancelled."""
        assert status in (FAILED, CANCELLED)
        with self._tx() as conn:
            return self._fenced_update(conn, job_id, token, status=status, error=error,
                                       finished_at=utcnow(), **NO_LEASE)

    def release(self, job_id: str, token: str) -> bool:
        """Give a claimed job back (worker shutting down): queued again, this attempt not
        counted; a job being cancelled ends cancelled."""
        now = utcnow()
        with self._tx() as conn:
            self._fenced_update(conn, job_id, token, jobs.c.status == CANCELLING,
                                status=CANCELLED, finished_at=now, **NO_LEASE)
            return self._fenced_update(conn, job_id, token, status=QUEUED, enqueued_at=now,
                                       attempts=jobs.c.attempts - 1, **NO_LEASE)

    def reap(self, max_attempts: int) -> Reaped:
        """Jobs whose worker stopped renewing its lease (killed, machine lost).

        Running ones go back to queued (the caller re-sends them; they resume from their
        checkpoint), or fail once they have been claimed `max_attempts` times; cancelling
        ones end cancelled. Each transition is a guarded UPDATE, so when several workers reap
        at once each job is handled by exactly one of them."""
        now = utcnow()
        expired = and_(jobs.c.lease_until.is_not(None), jobs.c.lease_until < now)
        requeued: list[str] = []
        failed: list[str] = []
        cancelled: list[str] = []
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.status, jobs.c.attempts, jobs.c.lease_owner).where(
                    jobs.c.status.in_([RUNNING, CANCELLING]), expired
                )
            ).all()
        for job_id, status, attempts, lease_owner in rows:
            guard = and_(
                jobs.c.id == job_id,
                jobs.c.status == status,
                jobs.c.lease_owner == lease_owner,
                expired,
            )
            with self._tx() as conn:
                if status == CANCELLING:
                    values: dict[str, Any] = {"status": CANCELLED, "finished_at": now}
                    target = cancelled
                elif attempts >= max_attempts:
                    values = {
                        "status": FAILED,
                        "finished_at": now,
                        "error": f"the worker running this job was lost {attempts} times "
                        f"(the last one: {lease_owner}); giving up after {max_attempts} attempts",
                    }
                    target = failed
                else:
                    values = {"status": QUEUED, "enqueued_at": now}
                    target = requeued
                result = conn.execute(
                    update(jobs)
                    .where(guard)
                    .values(lease_owner=None, lease_until=None, **values)
                )
                if result.rowcount == 1:
                    target.append(job_id)
        return Reaped(requeued=requeued, failed=failed, cancelled=cancelled)

    def stale_queued(self, older_than_seconds: float) -> list[str]:
        """Queued jobs with no message sent for a while; marks them as re-sent now (so that
        of several reapers one re-sends each job)."""
        now = utcnow()
        threshold = now - timedelta(seconds=older_than_seconds)
        with self.engine.connect() as conn:
            ids = conn.execute(
                select(jobs.c.id).where(jobs.c.status == QUEUED, jobs.c.enqueued_at < threshold)
            ).scalars().all()
        won = []
        for job_id in ids:
            with self._tx() as conn:
                result = conn.execute(
                    update(jobs)
                    .where(
                        jobs.c.id == job_id,
                        jobs.c.status == QUEUED,
                        jobs.c.enqueued_at < threshold,
                    )
                    .values(enqueued_at=now)
                )
                if result.rowcount == 1:
                    won.append(job_id)
        return won

    # --- models --------------------------------------------------------------------------------

    # A model belongs to the owner of the job that made it (`owner` in the rows below).
    _models_with_owner = select(models, jobs.c.owner).join(jobs, models.c.job_id == jobs.c.id)
    # Built once: every sampling request reads its model, and building the statement anew
    # was a fifth of the API's time for a one-row request.
    _model_by_id = _models_with_owner.where(models.c.id == bindparam("model_id"))

    def get_model(self, model_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._model_by_id, {"model_id": model_id})
            return _row(row.mappings().first())

    def list_models(self, *, visible_to: str | None = None, everyone: bool = True,
                    limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
        """Newest first. everyone False: only the models of owner `visible_to` and the shared
        ones."""
        where = None
        if not everyone:
            where = or_(models.c.visibility == SHARED,
                        and_(jobs.c.owner.is_not(None), jobs.c.owner == visible_to))
        query = self._models_with_owner.order_by(models.c.created_at.desc(), models.c.id)
        count = select(func.count()).select_from(models.join(jobs, models.c.job_id == jobs.c.id))
        if where is not None:
            query, count = query.where(where), count.where(where)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).mappings()
            items = [r for r in (_row(m) for m in rows) if r]
            total = int(conn.execute(count).scalar_one())
        return items, total

    def set_model_visibility(self, model_id: str, visibility: str) -> dict[str, Any] | None:
        assert visibility in VISIBILITIES
        with self._tx() as conn:
            conn.execute(update(models).where(models.c.id == model_id)
                         .values(visibility=visibility))
        return self.get_model(model_id)

    # --- uploaded data sets ------------------------------------------------------------------

    def create_dataset(
        self,
        dataset_id: str,
        *,
        filename: str,
        artifact_uri: str,
        format: str,
        size: int,
        sha256: str,
        owner: str | None = None,
    ) -> dict[str, Any]:
        with self._tx() as conn:
            conn.execute(
                insert(datasets).values(
                    id=dataset_id,
                    filename=filename,
                    artifact_uri=artifact_uri,
                    format=format,
                    size=size,
                    sha256=sha256,
                    owner=owner,
                    created_at=utcnow(),
                )
            )
        found = self.get_dataset(dataset_id)
        assert found is not None
        return found

    def get_dataset(self, dataset_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(datasets).where(datasets.c.id == dataset_id)).mappings()
            return _row(row.first())

    # --- batch sampling jobs: the API's side ---------------------------------------------------

    def create_sampling_job(self, *, model_id: str, owner: str | None, request: dict[str, Any],
                            seed: int, chunk_rows: int, total_rows: int | None = None,
                            max_active: int | None = None) -> dict[str, Any]:
        """A queued sampling job. `max_active`: QuotaExceeded when `owner` has that many
        queued, running or cancelling sampling jobs, checked and inserted under the owner's
        lock row (the one training submissions take), as create_job does."""
        job_id = str(uuid.uuid4())
        now = utcnow()
        if max_active is not None and owner is not None:
            self._ensure_owner_lock(owner)
        with self._tx() as conn:
            if max_active is not None and owner is not None:
                conn.execute(update(owner_locks).where(owner_locks.c.owner == owner)
                             .values(submissions=owner_locks.c.submissions + 1))
                active = int(conn.execute(
                    select(func.count()).select_from(sampling_jobs).where(
                        sampling_jobs.c.owner == owner,
                        sampling_jobs.c.status.in_(ACTIVE))).scalar_one())
                if active >= max_active:
                    raise QuotaExceeded(active)
            conn.execute(insert(sampling_jobs).values(
                id=job_id, model_id=model_id, owner=owner, status=QUEUED, request=request,
                seed=seed, chunk_rows=chunk_rows, total_rows=total_rows, rows_done=0,
                chunks_done=0, attempts=0, enqueued_at=now, created_at=now))
        job = self.get_sampling_job(job_id)
        assert job is not None
        return job

    def get_sampling_job(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sampling_jobs).where(sampling_jobs.c.id == job_id))
            return _row(row.mappings().first())

    def list_sampling_jobs(self, *, status: Sequence[str] | None = None,
                           owner: str | None = None, limit: int = 50, offset: int = 0
                           ) -> tuple[list[dict[str, Any]], int]:
        """Newest first; `owner` None: every owner's."""
        cond: list[ColumnElement[bool]] = []
        if status:
            cond.append(sampling_jobs.c.status.in_(list(status)))
        if owner is not None:
            cond.append(sampling_jobs.c.owner == owner)
        query = select(sampling_jobs).order_by(sampling_jobs.c.created_at.desc(),
                                               sampling_jobs.c.id)
        count = select(func.count()).select_from(sampling_jobs)
        if cond:
            query, count = query.where(and_(*cond)), count.where(and_(*cond))
        with self.engine.connect() as conn:
            rows = [_row(r) for r in conn.execute(query.limit(limit).offset(offset)).mappings()]
            total = int(conn.execute(count).scalar_one())
        return [r for r in rows if r is not None], total

    def sampling_chunks(self, job_id: str) -> list[dict[str, Any]]:
        """The chunks of a sampling job, in row order."""
        query = (select(sampling_chunks).where(sampling_chunks.c.job_id == job_id)
                 .order_by(sampling_chunks.c.chunk))
        with self.engine.connect() as conn:
            return [r for r in (_row(m) for m in conn.execute(query).mappings()) if r]

    def sampling_events_since(self, job_id: str, after_id: int = 0, limit: int = 1000
                              ) -> list[dict[str, Any]]:
        """The chunks that finished, in the order they finished, after event `after_id` (an
        event's id is its `seq`: the n-th chunk of the job to finish), with the rows done
        once each had finished."""
        query = (select(sampling_chunks.c.seq, sampling_chunks.c.chunk,
                        sampling_chunks.c.start, sampling_chunks.c.stop,
                        sampling_chunks.c.attempts)
                 .where(sampling_chunks.c.job_id == job_id, sampling_chunks.c.seq.is_not(None))
                 .order_by(sampling_chunks.c.seq))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        events: list[dict[str, Any]] = []
        done = 0
        for seq, chunk, start, stop, attempts in rows:
            done += int(stop) - int(start)
            if seq > after_id and len(events) < limit:
                events.append({"id": int(seq), "chunk": int(chunk), "start": int(start),
                               "stop": int(stop), "rows": int(stop) - int(start),
                               "attempt": int(attempts), "chunks_done": int(seq),
                               "rows_done": done})
        return events

    def mark_sampling_enqueued(self, job_id: str) -> None:
        with self._tx() as conn:
            conn.execute(update(sampling_jobs).where(sampling_jobs.c.id == job_id)
                         .values(enqueued_at=utcnow()))

    def request_sampling_cancel(self, job_id: str) -> dict[str, Any] | None:
        """queued -> cancelled at once; running -> cancelling, its chunks not yet started
        cancelled, and cancelled as soon as no chunk runs (the running ones stop at their
        next piece). None: no such job."""
        now = utcnow()
        c = sampling_chunks.c
        with self._tx() as conn:
            conn.execute(update(sampling_jobs)
                         .where(sampling_jobs.c.id == job_id, sampling_jobs.c.status == QUEUED)
                         .values(status=CANCELLED, finished_at=now, **NO_LEASE))
            moved = conn.execute(update(sampling_jobs)
                                 .where(sampling_jobs.c.id == job_id,
                                        sampling_jobs.c.status == RUNNING)
                                 .values(status=CANCELLING))
            if moved.rowcount:
                conn.execute(update(sampling_chunks)
                             .where(c.job_id == job_id, c.status == QUEUED)
                             .values(status=CANCELLED, finished_at=now))
                self._settle_sampling(conn, job_id, now)
        return self.get_sampling_job(job_id)

    def _settle_sampling(self, conn: Connection, job_id: str, now: datetime) -> None:
        """A cancelling job with no chunk running any more (or none planned yet) ends
        cancelled; a planner still holding it is fenced out."""
        running = (select(sampling_chunks.c.chunk)
                   .where(sampling_chunks.c.job_id == job_id,
                          sampling_chunks.c.status == RUNNING).exists())
        conn.execute(update(sampling_jobs)
                     .where(sampling_jobs.c.id == job_id, sampling_jobs.c.status == CANCELLING,
                            ~running)
                     .values(status=CANCELLED, finished_at=now, **NO_LEASE))

    # --- batch sampling jobs: the worker's side ------------------------------------------------

    def claim_sampling_plan(self, job_id: str, token: str, lease_seconds: float,
                            max_attempts: int) -> dict[str, Any] | None:
        """Take a queued sampling job to plan it (or one whose planner's lease lapsed), as
        `claim` takes a training job. None: not claimable (the message is dropped)."""
        now = utcnow()
        j = sampling_jobs.c
        claimable = or_(j.status == QUEUED, and_(j.status == RUNNING, j.lease_until < now))
        with self._tx() as conn:
            result = conn.execute(
                update(sampling_jobs)
                .where(j.id == job_id, claimable, j.attempts < max_attempts,
                       j.chunks_total.is_(None))
                .values(status=RUNNING, lease_owner=token,
                        lease_until=now + timedelta(seconds=lease_seconds),
                        attempts=j.attempts + 1, started_at=func.coalesce(j.started_at, now)))
            if result.rowcount != 1:
                return None
        return self.get_sampling_job(job_id)

    def _plan_fenced(self, job_id: str, token: str) -> ColumnElement[bool]:
        j = sampling_jobs.c
        return and_(j.id == job_id, j.lease_owner == token, j.status == RUNNING)

    def heartbeat_sampling_plan(self, job_id: str, token: str, lease_seconds: float) -> bool:
        """Extend the planner's lease: False when it was lost (or the job cancelled)."""
        with self._tx() as conn:
            result = conn.execute(
                update(sampling_jobs).where(self._plan_fenced(job_id, token))
                .values(lease_until=utcnow() + timedelta(seconds=lease_seconds)))
            return bool(result.rowcount == 1)

    def plan_sampling_job(self, job_id: str, token: str, *, total_rows: int,
                          bounds: Sequence[tuple[int, int]], plan: dict[str, Any]) -> bool:
        """Record the plan and queue its chunks, in one transaction fenced by the planner's
        token; the job keeps running, held by no one (its chunks are leased instead)."""
        now = utcnow()
        with self._tx() as conn:
            result = conn.execute(
                update(sampling_jobs).where(self._plan_fenced(job_id, token))
                .values(total_rows=total_rows, chunks_total=len(bounds), plan=plan,
                        **NO_LEASE))
            if result.rowcount != 1:
                return False
            conn.execute(insert(sampling_chunks), [
                {"job_id": job_id, "chunk": i, "start": start, "stop": stop,
                 "status": QUEUED, "attempts": 0, "enqueued_at": now}
                for i, (start, stop) in enumerate(bounds)])
        return True

    def fail_sampling_plan(self, job_id: str, token: str, error: str) -> bool:
        with self._tx() as conn:
            result = conn.execute(
                update(sampling_jobs).where(self._plan_fenced(job_id, token))
                .values(status=FAILED, error=error, finished_at=utcnow(), **NO_LEASE))
            return bool(result.rowcount == 1)

    def release_sampling_plan(self, job_id: str, token: str) -> bool:
        """Give a job being planned back (worker shutting down): queued, attempt not counted."""
        j = sampling_jobs.c
        with self._tx() as conn:
            result = conn.execute(
                update(sampling_jobs).where(self._plan_fenced(job_id, token))
                .values(status=QUEUED, attempts=j.attempts - 1, enqueued_at=utcnow(),
                        **NO_LEASE))
            return bool(result.rowcount == 1)

    def claim_chunk(self, job_id: str, chunk: int, token: str, lease_seconds: float,
                    max_attempts: int) -> dict[str, Any] | None:
        """Atomically take a chunk that is queued, or running under a lapsed lease, of a job
        that is running (not cancelling or ended). None: the message is dropped."""
        now = utcnow()
        c = sampling_chunks.c
        job_running = (select(sampling_jobs.c.id)
                       .where(sampling_jobs.c.id == job_id,
                              sampling_jobs.c.status == RUNNING).exists())
        claimable = or_(c.status == QUEUED, and_(c.status == RUNNING, c.lease_until < now))
        with self._tx() as conn:
            result = conn.execute(
                update(sampling_chunks)
                .where(c.job_id == job_id, c.chunk == chunk, claimable,
                       c.attempts < max_attempts, job_running)
                .values(status=RUNNING, lease_owner=token,
                        lease_until=now + timedelta(seconds=lease_seconds),
                        attempts=c.attempts + 1, started_at=func.coalesce(c.started_at, now)))
            if result.rowcount != 1:
                return None
            row = conn.execute(select(sampling_chunks).where(c.job_id == job_id,
                                                             c.chunk == chunk)).mappings()
            return _row(row.first())

    def _chunk_fenced(self, job_id: str, chunk: int, token: str) -> ColumnElement[bool]:
        c = sampling_chunks.c
        return and_(c.job_id == job_id, c.chunk == chunk, c.lease_owner == token,
                    c.status == RUNNING)

    def heartbeat_chunk(self, job_id: str, chunk: int, token: str,
                        lease_seconds: float) -> str | None:
        """Extend a chunk's lease. The job's status, or None when the lease was lost."""
        until = utcnow() + timedelta(seconds=lease_seconds)
        with self._tx() as conn:
            result = conn.execute(update(sampling_chunks)
                                  .where(self._chunk_fenced(job_id, chunk, token))
                                  .values(lease_until=until))
            if result.rowcount != 1:
                return None
            return str(conn.execute(select(sampling_jobs.c.status)
                                    .where(sampling_jobs.c.id == job_id)).scalar_one())

    def finish_chunk(self, job_id: str, chunk: int, token: str, *, shard_key: str,
                     shard_bytes: int, shard_sha256: str) -> bool:
        """A chunk's shard is stored: the chunk succeeded, the job's counts go up, and the
        job succeeds with its last chunk (or ends cancelled if it was being cancelled and
        this was its last running chunk), in one transaction fenced by the chunk's token."""
        now = utcnow()
        c, j = sampling_chunks.c, sampling_jobs.c
        with self._tx() as conn:
            result = conn.execute(
                update(sampling_chunks).where(self._chunk_fenced(job_id, chunk, token))
                .values(status=SUCCEEDED, shard_key=shard_key, shard_bytes=shard_bytes,
                        shard_sha256=shard_sha256, done_by=token, finished_at=now, error=None,
                        **NO_LEASE))
            if result.rowcount != 1:
                return False
            start, stop = conn.execute(select(c.start, c.stop).where(
                c.job_id == job_id, c.chunk == chunk)).one()
            conn.execute(update(sampling_jobs).where(j.id == job_id).values(
                chunks_done=j.chunks_done + 1, rows_done=j.rows_done + (stop - start)))
            done, total = conn.execute(select(j.chunks_done, j.chunks_total)
                                       .where(j.id == job_id)).one()
            conn.execute(update(sampling_chunks).where(c.job_id == job_id, c.chunk == chunk)
                         .values(seq=done))
            if total is not None and done >= total:
                conn.execute(update(sampling_jobs)
                             .where(j.id == job_id, j.status.in_([RUNNING, CANCELLING]))
                             .values(status=SUCCEEDED, finished_at=now, **NO_LEASE))
            else:
                self._settle_sampling(conn, job_id, now)
        return True

    def stop_chunk(self, job_id: str, chunk: int, token: str) -> bool:
        """A chunk stopped because its job is no longer running (cancelled, failed): the
        chunk ends cancelled, and a cancelling job with no chunk left running ends cancelled."""
        now = utcnow()
        with self._tx() as conn:
            result = conn.execute(
                update(sampling_chunks).where(self._chunk_fenced(job_id, chunk, token))
                .values(status=CANCELLED, finished_at=now, **NO_LEASE))
            self._settle_sampling(conn, job_id, now)
            return bool(result.rowcount == 1)

    def release_chunk(self, job_id: str, chunk: int, token: str) -> bool:
        """Give a chunk back (worker shutting down): queued again, this attempt not counted."""
        c = sampling_chunks.c
        with self._tx() as conn:
            result = conn.execute(
                update(sampling_chunks).where(self._chunk_fenced(job_id, chunk, token))
                .values(status=QUEUED, attempts=c.attempts - 1, enqueued_at=utcnow(),
                        **NO_LEASE))
            return bool(result.rowcount == 1)

    def fail_chunk(self, job_id: str, chunk: int, token: str, error: str) -> bool:
        """A chunk that cannot be done (bad data) fails, and its job with it: the job's
        chunks not yet started are cancelled, the running ones stop at their next piece."""
        now = utcnow()
        with self._tx() as conn:
            result = conn.execute(
                update(sampling_chunks).where(self._chunk_fenced(job_id, chunk, token))
                .values(status=FAILED, error=error, finished_at=now, **NO_LEASE))
            if result.rowcount != 1:
                return False
            self._fail_sampling_job(conn, job_id, error, now)
        return True

    def _fail_sampling_job(self, conn: Connection, job_id: str, error: str,
                           now: datetime) -> None:
        j, c = sampling_jobs.c, sampling_chunks.c
        conn.execute(update(sampling_jobs)
                     .where(j.id == job_id, j.status.in_([RUNNING, CANCELLING]))
                     .values(status=FAILED, error=error, finished_at=now, **NO_LEASE))
        conn.execute(update(sampling_chunks).where(c.job_id == job_id, c.status == QUEUED)
                     .values(status=CANCELLED, finished_at=now))

    def reap_sampling(self, max_attempts: int) -> SamplingReaped:
        """Planners and chunks whose worker stopped renewing its lease. A job being planned
        goes back to queued (or fails after `max_attempts` claims); a chunk of a running job
        goes back to queued (or fails its job after `max_attempts`); a chunk of a job that
        is no longer running ends cancelled. Guarded UPDATEs: with several reapers at once,
        each lapsed lease is handled by one of them."""
        now = utcnow()
        j, c = sampling_jobs.c, sampling_chunks.c
        plans: list[str] = []
        chunks: list[tuple[str, int]] = []
        failed: list[str] = []
        cancelled: list[tuple[str, int]] = []
        job_expired = and_(j.lease_until.is_not(None), j.lease_until < now)
        chunk_expired = and_(c.lease_until.is_not(None), c.lease_until < now)
        with self.engine.connect() as conn:
            planners = conn.execute(select(j.id, j.attempts, j.lease_owner).where(
                j.status == RUNNING, job_expired)).all()
            lapsed = conn.execute(
                select(c.job_id, c.chunk, c.attempts, c.lease_owner, c.start, c.stop,
                       j.status).join(sampling_jobs, j.id == c.job_id)
                .where(c.status == RUNNING, chunk_expired)).all()
        for job_id, attempts, owner in planners:
            guard = and_(j.id == job_id, j.status == RUNNING, j.lease_owner == owner,
                         job_expired)
            if attempts >= max_attempts:
                values: dict[str, Any] = {
                    "status": FAILED, "finished_at": now,
                    "error": f"the worker planning this job was lost {attempts} times (the "
                             f"last one: {owner}); giving up after {max_attempts} attempts"}
            else:
                values = {"status": QUEUED, "enqueued_at": now}
            with self._tx() as tx:
                if tx.execute(update(sampling_jobs).where(guard)
                              .values(**NO_LEASE, **values)).rowcount == 1:
                    (failed if values["status"] == FAILED else plans).append(job_id)
        for job_id, chunk, attempts, owner, start, stop, job_status in lapsed:
            guard = and_(c.job_id == job_id, c.chunk == chunk, c.status == RUNNING,
                         c.lease_owner == owner, chunk_expired)
            with self._tx() as tx:
                if job_status != RUNNING:
                    if tx.execute(update(sampling_chunks).where(guard).values(
                            status=CANCELLED, finished_at=now, **NO_LEASE)).rowcount == 1:
                        cancelled.append((job_id, chunk))
                    self._settle_sampling(tx, job_id, now)
                elif attempts >= max_attempts:
                    error = (f"the worker running chunk {chunk} (rows {start}..{stop}) was "
                             f"lost {attempts} times (the last one: {owner}); giving up "
                             f"after {max_attempts} attempts")
                    if tx.execute(update(sampling_chunks).where(guard).values(
                            status=FAILED, error=error, finished_at=now,
                            **NO_LEASE)).rowcount == 1:
                        self._fail_sampling_job(tx, job_id, error, now)
                        failed.append(job_id)
                elif tx.execute(update(sampling_chunks).where(guard).values(
                        status=QUEUED, enqueued_at=now, **NO_LEASE)).rowcount == 1:
                    chunks.append((job_id, chunk))
        return SamplingReaped(plans=plans, chunks=chunks, failed=failed, cancelled=cancelled)

    def stale_sampling(self, older_than_seconds: float
                       ) -> tuple[list[str], list[tuple[str, int]]]:
        """(sampling jobs queued, chunks of running jobs queued) with no message sent for
        `older_than_seconds`; each is marked as re-sent now, so one of several reapers
        re-sends it."""
        now = utcnow()
        threshold = now - timedelta(seconds=older_than_seconds)
        j, c = sampling_jobs.c, sampling_chunks.c
        with self.engine.connect() as conn:
            job_ids = conn.execute(select(j.id).where(
                j.status == QUEUED, j.enqueued_at < threshold)).scalars().all()
            chunk_keys = conn.execute(
                select(c.job_id, c.chunk).join(sampling_jobs, j.id == c.job_id)
                .where(c.status == QUEUED, c.enqueued_at < threshold,
                       j.status == RUNNING)).all()
        plans: list[str] = []
        chunks: list[tuple[str, int]] = []
        for job_id in job_ids:
            with self._tx() as tx:
                if tx.execute(update(sampling_jobs).where(
                        j.id == job_id, j.status == QUEUED, j.enqueued_at < threshold)
                        .values(enqueued_at=now)).rowcount == 1:
                    plans.append(job_id)
        for job_id, chunk in chunk_keys:
            with self._tx() as tx:
                if tx.execute(update(sampling_chunks).where(
                        c.job_id == job_id, c.chunk == chunk, c.status == QUEUED,
                        c.enqueued_at < threshold).values(enqueued_at=now)).rowcount == 1:
                    chunks.append((job_id, int(chunk)))
        return plans, chunks
