"""/v1/models: the registered generators, their ONNX files, and sampling."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute

from service.auth import PrincipalDep
from service.binary_conditions import CONDITION_MEDIA_TYPES, binary_conditions, media_type
from service.deps import CacheDep, RecordsDep, RowsDep, SettingsDep, StoreDep
from service.ownership import list_filter, owned_model, visible_model
from service.problems import invalid
from service.samples import (
    check_n,
    condition_matrix,
    loaded_model,
    query_conditions,
    response_format,
    serve_samples,
)
from service.schemas import ModelList, ModelOut, ModelUpdate, SamplesRequest
from serving.formats import FORMATS
from serving.sampling import LoadedModel

router = APIRouter(prefix="/v1/models", tags=["models"])

RESERVED_QUERY = frozenset({"n", "seed", "format"})
SAMPLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`json` ({columns, data}), `csv`, `npy` or Arrow IPC stream (`arrow`); "
        "X-Seed says the seed used",
        "content": {media: {} for media in FORMATS.values()},
    }
}


def _loaded(row: dict, store: StoreDep, cache: CacheDep) -> LoadedModel:
    return loaded_model(row, store, cache)


BINARY_BODY = "gan.binary_conditions"  # the scope key of a binary body: (kind, bytes)


class BinaryConditionsRoute(APIRoute):
    """POST .../samples with an npy, Arrow or Parquet body (by Content-Type): the body is
    kept in the request's scope for the route, and FastAPI is handed an empty JSON object
    in its place, so the JSON body keeps its schema, validation and documentation."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def binary_aware(request: Request) -> Response:
            kind = CONDITION_MEDIA_TYPES.get(media_type(request.headers.get("content-type")))
            if kind is None:
                return await handler(request)
            raw = await request.body()
            scope = dict(request.scope)
            scope["headers"] = [(k, v) for k, v in request.scope["headers"]
                                if k not in (b"content-type", b"content-length")]
            scope["headers"] += [(b"content-type", b"application/json"),
                                 (b"content-length", b"2")]
            scope[BINARY_BODY] = (kind, raw)

            async def empty_json() -> dict[str, Any]:
                return {"type": "http.request", "body": b"{}", "more_body": False}

            return await handler(Request(scope, empty_json))

        return binary_aware


BINARY_MEDIA = {media: {"schema": {"type": "string", "format": "binary"}}
                for media in CONDITION_MEDIA_TYPES}
POST_SAMPLES_BODY: dict[str, Any] = {"requestBody": {
    "description": "JSON (SamplesRequest), or the conditions as a binary body: npy (a 2-D "
    "numeric array, columns in the model's condition order, categorical conditions as their "
    "codes; application/x-npy or application/octet-stream), an Arrow IPC stream "
    "(application/vnd.apache.arrow.stream) or Parquet (application/vnd.apache.parquet, "
    "application/x-parquet), one column per condition, named as the model names them. "
    "Binary bodies take the seed as the `seed` query parameter.",
    "content": BINARY_MEDIA}}


@router.get("", response_model=ModelList)
def list_models(
    records: RecordsDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModelList:
    """Newest first: a non-admin key lists its own models and the shared ones."""
    items, total = records.list_models(limit=limit, offset=offset, **list_filter(principal))
    provider = None  # listing does not load every session
    return ModelList(items=[ModelOut.from_row(m, provider) for m in items], total=total,
                     limit=limit, offset=offset)


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, records: RecordsDep, store: StoreDep, cache: CacheDep,
              principal: PrincipalDep) -> ModelOut:
    """The model's columns, training summary, ONNX checksum, and `provider`: the ONNX Runtime
    execution provider its samples come from (CUDA when a GPU is there)."""
    row = visible_model(records, model_id, principal)
    return ModelOut.from_row(row, _loaded(row, store, cache).provider)


@router.get("/{model_id}/onnx", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def get_onnx(model_id: str, records: RecordsDep, store: StoreDep,
             principal: PrincipalDep) -> FileResponse:
    row = visible_model(records, model_id, principal)
    path = store.local_path(store.key_of(row["onnx_uri"]))
    return FileResponse(path, media_type="application/octet-stream",
                        filename=f"generator-{model_id}.onnx",
                        headers={"X-Checksum-SHA256": row["onnx_sha256"]})


@router.get("/{model_id}/samples", responses=SAMPLE_RESPONSES)
def get_samples(
    model_id: str,
    request: Request,
    records: RecordsDep,
    store: StoreDep,
    cache: CacheDep,
    settings: SettingsDep,
    rows: RowsDep,
    principal: PrincipalDep,
    n: Annotated[int, Query(ge=1, description="number of samples")] = 1000,
    seed: Annotated[int | None, Query(ge=0, lt=2**63, description="noise seed; random if "
                                      "absent (X-Seed says which)")] = None,
    format: Annotated[str | None, Query(description="json, csv, npy or arrow; else Accept")
                      ] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """n samples at one condition, given as one query parameter per condition column
    (`?n=1000&seed=7&p=12.5&eta=3.1`); a categorical condition takes its value (`?digit=3`,
    `?colour=red`; the model's `categories` lists them). Each parameter once."""
    row = visible_model(records, model_id, principal)
    fmt = response_format(format, accept)
    check_n(n, settings.MAX_SAMPLES_PER_REQUEST, ["query", "n"])
    model = _loaded(row, store, cache)
    given = query_conditions(model, request.query_params.multi_items(), RESERVED_QUERY)
    single = condition_matrix(model, given, ["query"])
    conditions = np.repeat(single, n, axis=0) if single is not None else None
    seed = secrets.randbits(63) if seed is None else seed
    return serve_samples(model, model_id, n, seed, conditions, fmt, rows=rows,
                         key=principal.owner, timeout=settings.REQUEST_TIMEOUT_SECONDS)


def post_samples(
    model_id: str,
    request: Request,
    body: SamplesRequest,
    records: RecordsDep,
    store: StoreDep,
    cache: CacheDep,
    settings: SettingsDep,
    rows: RowsDep,
    principal: PrincipalDep,
    format: Annotated[str | None, Query(description="json, csv, npy or arrow; else Accept")
                      ] = None,
    seed: Annotated[int | None, Query(ge=0, lt=2**63, description="noise seed of a binary "
                                      "body (a JSON body gives its own); random if absent "
                                      "(X-Seed says which)")] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """One sample per row of `conditions` (`{"conditions": {"p": [...], "eta": [...]},
    "seed": 7}`); an unconditional model takes `{"n": 1000, "seed": 7}`. A categorical
    condition takes its values, integers or strings (`{"conditions": {"digit": [3, 7]}}`).
    The conditions may also come as an npy, Arrow IPC or Parquet body (by Content-Type,
    with `?seed=`): the fast path for millions of rows."""
    row = visible_model(records, model_id, principal)
    fmt = response_format(format, accept)
    model = _loaded(row, store, cache)
    limit = settings.MAX_SAMPLES_PER_REQUEST
    binary = request.scope.get(BINARY_BODY)
    if binary is not None:
        kind, raw = binary
        matrix = binary_conditions(model, raw, kind, limit)
        seed = secrets.randbits(63) if seed is None else seed
        return serve_samples(model, model_id, len(matrix), seed, matrix, fmt,
                             rows=rows, key=principal.owner,
                             timeout=settings.REQUEST_TIMEOUT_SECONDS)
    if seed is not None and body.seed is not None and seed != body.seed:
        raise invalid("give the seed once: in the body or as the seed query parameter",
                      ["query", "seed"])
    if model.condition_names:
        lengths = {len(v) for v in body.conditions.values()}
        if lengths and max(lengths) > limit:  # before the values are converted
            check_n(max(lengths), limit, ["body", "conditions"])
        conditions = condition_matrix(model, body.conditions, ["body", "conditions"],
                                      "conditions.")
        assert conditions is not None
        n = len(conditions)
        if body.n is not None and body.n != n:
            raise invalid(f"n={body.n} but the conditions have {n} rows", ["body", "n"])
    else:
        if body.conditions:
            raise invalid("this model is unconditional: give `n`, not conditions",
                          ["body", "conditions"])
        if body.n is None:
            raise invalid("give the number of samples `n`", ["body", "n"])
        n = body.n
        check_n(n, limit, ["body", "n"])
        conditions = None
    chosen = body.seed if body.seed is not None else seed
    chosen = secrets.randbits(63) if chosen is None else chosen
    return serve_samples(model, model_id, n, chosen, conditions, fmt, rows=rows,
                         key=principal.owner, timeout=settings.REQUEST_TIMEOUT_SECONDS)


router.add_api_route("/{model_id}/samples", post_samples, methods=["POST"],
                     responses=SAMPLE_RESPONSES, openapi_extra=POST_SAMPLES_BODY,
                     route_class_override=BinaryConditionsRoute)


# Changing a model is for the key that trained it: this router needs the `train` scope.
owner_router = APIRouter(prefix="/v1/models", tags=["models"])


@owner_router.patch("/{model_id}", response_model=ModelOut)
def update_model(model_id: str, body: ModelUpdate, records: RecordsDep,
                 principal: PrincipalDep) -> ModelOut:
    """`{"visibility": "shared"}` lets every key with the `sample` scope read and sample the
    model (its report, plots and ONNX file too: see the security page for what they reveal of
    the training data); `"private"` (the default) takes that back. Only its owner (or an
    admin) may change it."""
    owned_model(records, model_id, principal)
    row = records.set_model_visibility(model_id, body.visibility)
    assert row is not None
    return ModelOut.from_row(row, None)
