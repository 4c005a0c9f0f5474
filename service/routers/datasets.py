"""/v1/datasets: upload a file, get a dataset:// URI to train on (service/uploads.py stores
and inspects it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile

from service.auth import PrincipalDep
from service.deps import RecordsDep, SettingsDep, StoreDep
from service.ownership import visible_dataset
from service.schemas import DatasetOut
from service.uploads import store_upload

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


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
    row = await store_upload(file, request.headers.get("content-length"), records=records,
                             store=store, settings=settings, owner=principal.owner)
    response.headers["Location"] = f"/v1/datasets/{row['id']}"
    return _to_out(row)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, records: RecordsDep, principal: PrincipalDep) -> DatasetOut:
    """An upload of this key (any upload for an admin); another key's: 404."""
    return _to_out(visible_dataset(records, dataset_id, principal))
