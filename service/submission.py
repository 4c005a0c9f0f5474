"""Submitting a training job: the rules a spec must pass before it is queued, the owner's
quota, idempotency, and the message to the worker. The router only parses and answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery

from gan_platform.records import QuotaExceeded, Records
from gan_platform.settings import Settings
from models.spec import JobSpec
from service.auth import Principal
from service.celery_client import send_train
from service.ownership import check_upload_owner
from service.problems import Problem, invalid
from service.validation import check_dataset_uri, check_job_resources


@dataclass(frozen=True)
class Submitted:
    job: dict[str, Any]
    replayed: bool  # the Idempotency-Key named a job already made: this is that job


def submit(spec: JobSpec, principal: Principal, *, records: Records, settings: Settings,
           sender: Celery, idempotency_key: str | None = None) -> Submitted:
    """Queue `spec` for `principal`, or answer the job an earlier request with the same
    Idempotency-Key made. Problems (4xx) for a spec no worker would run."""
    spec_hash = spec.spec_hash()
    if idempotency_key is not None:
        existing = records.job_by_idempotency_key(idempotency_key)
        if existing is not None:
            return _replayed(existing, spec_hash, principal)
    check_spec(spec, principal, records=records, settings=settings)
    try:
        job, created = records.create_job(
            spec.model_dump(mode="json"), spec_hash, idempotency_key=idempotency_key,
            owner=principal.owner, max_active=settings.MAX_QUEUED_JOBS_PER_KEY,
        )
    except QuotaExceeded as exc:
        raise Problem(429, f"this API key has {exc.active} queued or running jobs; "
                      f"MAX_QUEUED_JOBS_PER_KEY={settings.MAX_QUEUED_JOBS_PER_KEY}",
                      title="Too many jobs", type="too-many-jobs",
                      headers={"Retry-After": "60"}) from exc
    if not created:  # a concurrent request with the same key won the race
        return _replayed(job, spec_hash, principal)
    send_train(sender, settings, job["id"])
    return Submitted(job=job, replayed=False)


def check_spec(spec: JobSpec, principal: Principal, *, records: Records,
               settings: Settings) -> None:
    """What a valid spec must also pass here: the step cap, a data set the worker can reach
    and the caller may read, and a memory estimate within the budget."""
    if spec.training.steps > settings.MAX_TRAINING_STEPS:
        raise invalid(f"training.steps={spec.training.steps} is above MAX_TRAINING_STEPS="
                      f"{settings.MAX_TRAINING_STEPS}", ["body", "training", "steps"])
    check_dataset_uri(spec.dataset.uri, settings, records)
    check_upload_owner(spec.dataset.uri, records, principal)
    check_job_resources(spec, settings)


def _replayed(job: dict[str, Any], spec_hash: str, principal: Principal) -> Submitted:
    if not principal.can_see(job["owner"]):
        raise Problem(422, "this Idempotency-Key is already used by another API key",
                      title="Idempotency-Key reused", type="idempotency-key-reused")
    if job["spec_hash"] != spec_hash:
        raise Problem(422, f"this Idempotency-Key was used for job {job['id']} with a "
                      "different spec", title="Idempotency-Key reused",
                      type="idempotency-key-reused")
    return Submitted(job=job, replayed=True)
