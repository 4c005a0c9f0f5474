"""/v1/datasets: upload a file, get a dataset:// URI to train on.

An upload is typed by its content and inspected before it is stored
(models.datasets.inspect_upload: HDF5 links and external storage, zip bombs, wide or badly
named columns...), so a user learns at once what is wrong (422). It is stored under a
neutral name (`uploads/<id>/data`): its reading never depends on the name the user gave,
which is kept in the database for display only.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from gan_platform.artifacts import upload_key
from models.datasets import DataLimits, inspect_upload, sniff_format
from service.auth import PrincipalDep
from service.deps import RecordsDep, SettingsDep, StoreDep
from service.ownership import visible_dataset
from service.problems import Problem, invalid
from service.schemas import DatasetOut

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# The stored file's name, for every upload: a name like x.zip must not change how it is read.
STORED_NAME = "data"


def safe_filename(name: str | None) -> str:
    base = Path(name or "data").name
    base = _SAFE.sub("_", base).strip("._") or "data"
    return base[-200:]


def sniff(path: Path, filename: str, limits: DataLimits) -> str:
    """The file's format by content, then every check that needs no job spec; DataError (a
    ValueError) names what is wrong."""
    fmt = str(sniff_format(path, limits, label=filename))
    inspect_upload(path, fmt, limits, label=filename)
    return fmt


def _to_out(row: dict) -> DatasetOut:
    return DatasetOut(id=row["id"], uri=f"dataset://{row['id']}", filename=row["filename"],
                      format=row["format"], size=row["size"], sha256=row["sha256"],
                      created_at=row["created_at"])


@router.post("", status_code=201, response_model=DatasetOut)
async def upload_dataset(
    file: Annotated[UploadFile, File(description="CSV, Parquet, NPY/NPZ, HDF5, ROOT...")],
    request: Request,
    response: Response,
    records: RecordsDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> DatasetOut:
    """Store an uploaded file; use the returned `uri` (dataset://ID) in a job spec."""
    limit = settings.MAX_UPLOAD_BYTES
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 1024 * 1024:
        raise Problem(413, f"the file is larger than MAX_UPLOAD_BYTES={limit}",
                      title="Upload too large", type="upload-too-large")
    filename = safe_filename(file.filename)
    digest = hashlib.sha256()
    size = 0
    with tempfile.TemporaryDirectory(prefix="upload-") as tmp:
        local = Path(tmp) / STORED_NAME
        with open(local, "wb") as out:
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise Problem(413, f"the file is larger than MAX_UPLOAD_BYTES={limit}",
                                  title="Upload too large", type="upload-too-large")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise invalid("the uploaded file is empty", ["body", "file"])
        try:
            fmt = await run_in_threadpool(sniff, local, filename,
                                          DataLimits.from_settings(settings))
        except (ValueError, OSError) as exc:
            raise invalid(f"unreadable data file {filename!r}: {exc}", ["body", "file"]) from exc
        dataset_id = str(uuid.uuid4())
        uri = await run_in_threadpool(store.put_file, local, upload_key(dataset_id, STORED_NAME))
    row = await run_in_threadpool(
        lambda: records.create_dataset(dataset_id, filename=filename, artifact_uri=uri,
                                       format=fmt, size=size, sha256=digest.hexdigest(),
                                       owner=principal.owner)
    )
    response.headers["Location"] = f"/v1/datasets/{dataset_id}"
    return _to_out(row)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, records: RecordsDep, principal: PrincipalDep) -> DatasetOut:
    """An upload of this key (any upload for an admin); another key's: 404."""
    return _to_out(visible_dataset(records, dataset_id, principal))
