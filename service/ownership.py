"""Who may see what: every job, upload and model belongs to the owner of the API key that made
it (a model: the owner of its job). Another key gets 404, as if the thing did not exist; an
`admin` key sees everything; a model whose owner made it `shared` is visible to every key
that may sample. With auth off every caller is the anonymous admin.

The routers call these instead of reading rows themselves, so the rule is written once.
"""

from __future__ import annotations

from typing import Any

from gan_platform.records import SHARED, Records
from service.auth import Principal
from service.problems import invalid, not_found


def visible_job(records: Records, job_id: str, principal: Principal) -> dict[str, Any]:
    """The job, or 404 when there is none or it belongs to another (non-admin) key."""
    job = records.get_job(job_id)
    if job is None or not principal.can_see(job["owner"]):
        raise not_found("job", job_id)
    return job


def visible_model(records: Records, model_id: str, principal: Principal) -> dict[str, Any]:
    """The model (its row, with `owner`), or 404 unless the caller owns it, it is shared, or
    the caller is an admin."""
    row = records.get_model(model_id)
    if row is None or not (row.get("visibility") == SHARED or principal.can_see(row["owner"])):
        raise not_found("model", model_id)
    return row


def owned_model(records: Records, model_id: str, principal: Principal) -> dict[str, Any]:
    """The model, or 404 unless the caller owns it (or is an admin): changing a model is for
    its owner, even when it is shared."""
    row = records.get_model(model_id)
    if row is None or not principal.can_see(row["owner"]):
        raise not_found("model", model_id)
    return row


def visible_dataset(records: Records, dataset_id: str, principal: Principal
                    ) -> dict[str, Any]:
    """The uploaded data set, or 404 when there is none or it belongs to another key."""
    row = records.get_dataset(dataset_id)
    if row is None or not principal.can_see(row["owner"]):
        raise not_found("dataset", dataset_id)
    return row


def check_upload_owner(uri: str, records: Records, principal: Principal) -> None:
    """A job may train on an upload only if the caller may see it (422, as for an unknown
    upload: the answer tells nothing of other keys' uploads)."""
    if not uri.startswith("dataset://"):
        return
    dataset_id = uri[len("dataset://"):].strip("/")
    row = records.get_dataset(dataset_id)
    if row is None or not principal.can_see(row["owner"]):
        raise invalid(f"no uploaded data set {dataset_id[:64]!r} (POST /v1/datasets first)",
                      ["body", "dataset", "uri"])


def list_filter(principal: Principal) -> dict[str, Any]:
    """records.list_models arguments: an admin sees every model, others theirs and the shared."""
    return {"everyone": principal.is_admin, "visible_to": principal.owner}
