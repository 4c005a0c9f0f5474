"""Storing an upload: counted while it is read, typed by its content and inspected before it
is stored (models.datasets.inspect_upload: HDF5 links and external storage, zip bombs, wide or
badly named columns...), so a user learns at once what is wrong (422). It is stored under a
neutral name (`uploads/<id>/data`): its reading never depends on the name the user gave,
which is kept in the database for display only.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from gan_platform.artifacts import ArtifactStore, upload_key
from gan_platform.records import Records
from gan_platform.settings import Settings
from models.datasets import DataLimits, inspect_upload, sniff_format
from service.problems import Problem, invalid

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


def _too_large(limit: int) -> Problem:
    return Problem(413, f"the file is larger than MAX_UPLOAD_BYTES={limit}",
                   title="Upload too large", type="upload-too-large")


async def store_upload(file: UploadFile, declared_length: str | None, *, records: Records,
                       store: ArtifactStore, settings: Settings, owner: str | None
                       ) -> dict[str, Any]:
    """The new upload's database row; 413 when too large, 422 when no job could read it."""
    limit = settings.MAX_UPLOAD_BYTES
    if declared_length and declared_length.isdigit() and int(declared_length) > limit + 2**20:
        raise _too_large(limit)
    filename = safe_filename(file.filename)
    digest = hashlib.sha256()
    size = 0
    with tempfile.TemporaryDirectory(prefix="upload-") as tmp:
        local = Path(tmp) / STORED_NAME
        with open(local, "wb") as out:
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
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
    return await run_in_threadpool(
        lambda: records.create_dataset(dataset_id, filename=filename, artifact_uri=uri,
                                       format=fmt, size=size, sha256=digest.hexdigest(),
                                       owner=owner))
