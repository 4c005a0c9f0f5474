"""/v1/models: the registered generators, their ONNX files, and sampling."""

from __future__ import annotations

import secrets
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse

from models.sampling import FORMATS, LoadedModel, SamplingError, choose_format, encode, sample
from service.deps import CacheDep, RecordsDep, SettingsDep, StoreDep
from service.problems import Problem, invalid, not_found
from service.schemas import ModelList, ModelOut, SamplesRequest
from service.validation import condition_column

router = APIRouter(prefix="/v1/models", tags=["models"])

RESERVED_QUERY = frozenset({"n", "seed", "format"})
SAMPLE_RESPONSES = {
    200: {
        "description": "`json` ({columns, data}), `csv`, `npy` or Arrow IPC stream (`arrow`); "
        "X-Seed says the seed used",
        "content": {media: {} for media in FORMATS.values()},
    }
}


def _row_or_404(records: RecordsDep, model_id: str) -> dict:
    row = records.get_model(model_id)
    if row is None:
        raise not_found("model", model_id)
    return row


def _loaded(row: dict, store: StoreDep, cache: CacheDep) -> LoadedModel:
    return cache.get(row["id"], lambda: store.local_path(store.key_of(row["onnx_uri"])))


@router.get("", response_model=ModelList)
def list_models(
    records: RecordsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModelList:
    items, total = records.list_models(limit=limit, offset=offset)
    provider = None  # listing does not load every session
    return ModelList(items=[ModelOut.from_row(m, provider) for m in items], total=total,
                     limit=limit, offset=offset)


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, records: RecordsDep, store: StoreDep, cache: CacheDep) -> ModelOut:
    """The model's columns, training summary, ONNX checksum, and `provider`: the ONNX Runtime
    execution provider its samples come from (CUDA when a GPU is there)."""
    row = _row_or_404(records, model_id)
    return ModelOut.from_row(row, _loaded(row, store, cache).provider)


@router.get("/{model_id}/onnx", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def get_onnx(model_id: str, records: RecordsDep, store: StoreDep) -> FileResponse:
    row = _row_or_404(records, model_id)
    path = store.local_path(store.key_of(row["onnx_uri"]))
    return FileResponse(path, media_type="application/octet-stream",
                        filename=f"generator-{model_id}.onnx",
                        headers={"X-Checksum-SHA256": row["onnx_sha256"]})


def _respond(samples: np.ndarray, model: LoadedModel, model_id: str, seed: int, fmt: str
             ) -> Response:
    headers = {"X-Seed": str(seed), "X-Model-Id": model_id, "X-Provider": model.provider,
               "X-Rows": str(samples.shape[0])}
    if fmt in ("npy", "arrow"):
        headers["Content-Disposition"] = f'attachment; filename="samples.{fmt}"'
    return Response(encode(samples, model.feature_names, fmt), media_type=FORMATS[fmt],
                    headers=headers)


def _check_n(n: int, limit: int, loc: list[str | int]) -> None:
    if n > limit:
        raise invalid(f"n={n} is above the maximum of {limit} samples per request "
                      "(MAX_SAMPLES_PER_REQUEST)", loc)


def _format(fmt: str | None, accept: str | None) -> str:
    try:
        return choose_format(fmt, accept)
    except SamplingError as exc:
        raise invalid(str(exc), ["query", "format"]) from exc


@router.get("/{model_id}/samples", responses=SAMPLE_RESPONSES)
def get_samples(
    model_id: str,
    request: Request,
    records: RecordsDep,
    store: StoreDep,
    cache: CacheDep,
    settings: SettingsDep,
    n: Annotated[int, Query(ge=1, description="number of samples")] = 1000,
    seed: Annotated[int | None, Query(ge=0, lt=2**63, description="noise seed; random if "
                                      "absent (X-Seed says which)")] = None,
    format: Annotated[str | None, Query(description="json, csv, npy or arrow; else Accept")
                      ] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """n samples at one condition, given as one query parameter per condition column
    (`?n=1000&seed=7&p=12.5&eta=3.1`); a categorical condition takes its value (`?digit=3`,
    `?colour=red`; the model's `categories` lists them)."""
    row = _row_or_404(records, model_id)
    fmt = _format(format, accept)
    _check_n(n, settings.MAX_SAMPLES_PER_REQUEST, ["query", "n"])
    model = _loaded(row, store, cache)
    given = {k: v for k, v in request.query_params.multi_items() if k not in RESERVED_QUERY}
    names = model.condition_names
    missing = [c for c in names if c not in given]
    extra = sorted(k for k in given if k not in names)
    errors = [{"loc": ["query", c], "field": c, "msg": "missing condition parameter",
               "type": "missing"} for c in missing]
    errors += [{"loc": ["query", k], "field": k, "msg": "not a condition of this model "
                f"(conditions: {names or 'none'})", "type": "extra_forbidden"} for k in extra]
    values = []
    for c in names:
        if c in given:
            column, error = condition_column(model, c, [given[c]], ["query", c], c)
            if error is not None:
                errors.append(error)
            else:
                assert column is not None
                values.append(float(column[0]))
    if errors:
        raise Problem(422, "; ".join(f"{e['field']}: {e['msg']}" for e in errors),
                      title="Invalid request", type="validation-error", errors=errors)
    conditions = np.tile(np.asarray(values, dtype=np.float32), (n, 1)) if names else None
    seed = secrets.randbits(63) if seed is None else seed
    try:
        samples = sample(model, n, seed, conditions)
    except SamplingError as exc:
        raise invalid(str(exc), ["query"]) from exc
    return _respond(samples, model, model_id, seed, fmt)


@router.post("/{model_id}/samples", responses=SAMPLE_RESPONSES)
def post_samples(
    model_id: str,
    body: SamplesRequest,
    records: RecordsDep,
    store: StoreDep,
    cache: CacheDep,
    settings: SettingsDep,
    format: Annotated[str | None, Query(description="json, csv, npy or arrow; else Accept")
                      ] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """One sample per row of `conditions` (`{"conditions": {"p": [...], "eta": [...]},
    "seed": 7}`); an unconditional model takes `{"n": 1000, "seed": 7}`. A categorical
    condition takes its values, integers or strings (`{"conditions": {"digit": [3, 7]}}`)."""
    row = _row_or_404(records, model_id)
    fmt = _format(format, accept)
    model = _loaded(row, store, cache)
    names = model.condition_names
    limit = settings.MAX_SAMPLES_PER_REQUEST
    if names:
        missing = [c for c in names if c not in body.conditions]
        extra = sorted(k for k in body.conditions if k not in names)
        errors = [{"loc": ["body", "conditions", c], "field": f"conditions.{c}",
                   "msg": "missing condition column", "type": "missing"} for c in missing]
        errors += [{"loc": ["body", "conditions", k], "field": f"conditions.{k}",
                    "msg": f"not a condition of this model (conditions: {names})",
                    "type": "extra_forbidden"} for k in extra]
        if errors:
            raise Problem(422, "; ".join(f"{e['field']}: {e['msg']}" for e in errors),
                          title="Invalid request", type="validation-error", errors=errors)
        lengths = {len(body.conditions[c]) for c in names}
        if len(lengths) != 1:
            raise invalid(f"condition columns differ in length: "
                          f"{ {c: len(body.conditions[c]) for c in names} }", ["body", "conditions"])
        n = lengths.pop()
        if n == 0:
            raise invalid("conditions have no rows", ["body", "conditions"])
        if body.n is not None and body.n != n:
            raise invalid(f"n={body.n} but the conditions have {n} rows", ["body", "n"])
        _check_n(n, limit, ["body", "conditions"])
        columns = []
        for c in names:
            column, error = condition_column(model, c, body.conditions[c],
                                             ["body", "conditions", c], f"conditions.{c}")
            if error is not None:
                errors.append(error)
            columns.append(column)
        if errors:
            raise Problem(422, "; ".join(f"{e['field']}: {e['msg']}" for e in errors),
                          title="Invalid request", type="validation-error", errors=errors)
        conditions = np.column_stack(columns)
    else:
        if body.conditions:
            raise invalid("this model is unconditional: give `n`, not conditions",
                          ["body", "conditions"])
        if body.n is None:
            raise invalid("give the number of samples `n`", ["body", "n"])
        n = body.n
        _check_n(n, limit, ["body", "n"])
        conditions = None
    seed = secrets.randbits(63) if body.seed is None else body.seed
    try:
        samples = sample(model, n, seed, conditions)
    except SamplingError as exc:
        raise invalid(str(exc), ["body"]) from exc
    return _respond(samples, model, model_id, seed, fmt)
