"""MAX_JOB_SECONDS: a job that trains longer than its wall-time budget ends `failed` with the
reason (the worker itself, in-process, on SQLite)."""

from __future__ import annotations

from pathlib import Path

from gan_platform.artifacts import ArtifactStore
from gan_platform.records import Records
from gan_platform.settings import Settings
from tests.conftest import fast_spec
from worker.runner import Context, run


def test_job_over_max_job_seconds_fails_with_the_reason(tmp_path: Path) -> None:
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path}/w.db",  # type: ignore[call-arg]
                        ARTIFACT_ROOT=str(tmp_path / "art"), WORK_ROOT=tmp_path / "work",
                        MAX_JOB_SECONDS=1.0)
    records = Records(settings.DATABASE_URL)
    ctx = Context(settings=settings, records=records,
                  store=ArtifactStore(settings.ARTIFACT_ROOT), resend=lambda _id: None)
    spec = fast_spec(steps=1_000_000)  # hours: only the wall-time limit can end it
    job, _ = records.create_job(spec, "h" * 64)
    assert run(ctx, job["id"]) == "timed-out"
    done = records.get_job(job["id"])
    assert done is not None and done["status"] == "failed"
    assert "MAX_JOB_SECONDS=1" in done["error"]
    assert done["progress"] is None or done["progress"]["step"] < 1_000_000
    records.dispose()


def test_the_worker_reads_an_upload_only_for_its_owner_or_an_admin() -> None:
    """Defence in depth behind the API's check at submit: a job row naming another owner's
    upload cannot read it in the worker."""
    from gan_platform.keys import hash_key
    from gan_platform.settings import Settings as S
    from worker.runner import may_read_upload

    conf = S(API_KEYS=[f"root:admin:{hash_key('r' * 20)}", f"bob:train:{hash_key('b' * 20)}"])
    assert may_read_upload("bob", "bob", conf)
    assert not may_read_upload("bob", "alice", conf)
    assert not may_read_upload("bob", None, conf)  # uploaded with auth off: not bob's
    assert may_read_upload("root", "alice", conf)
    assert may_read_upload(None, "alice", conf)  # auth off: the anonymous admin
