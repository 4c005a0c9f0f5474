"""The one parser of data set URIs, shared by the API (422 at submit) and the loader.

Both sides used to parse URIs each in their own way, so `dataset://ID/../x` passed the API
and failed in the worker. Now both call `parse_dataset_uri`: what it accepts, the worker can
resolve; what it refuses is refused at submit, with the same message. It checks the syntax
only: whether a builtin exists, a file lies under a data root or a host is allowed depends
on the configuration, and the caller checks it with the parsed value.

Standard library only (the API imports it; no numpy, no readers).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, unquote, urlsplit

from models.datasets.base import DataError

Scheme = Literal["builtin", "file", "dataset", "http", "https", "s3"]
SCHEMES: tuple[Scheme, ...] = ("builtin", "file", "dataset", "http", "https", "s3")
REMOTE_SCHEMES: tuple[Scheme, ...] = ("http", "https", "s3")
# Longer than any real path or URL; a longer one is an attempt to fill logs and messages.
MAX_URI_LENGTH = 4096
_SHOWN = 80  # characters of a hostile value quoted in a message


class InvalidURI(DataError):
    """A data set URI that no worker could resolve, whatever the configuration."""


@dataclass(frozen=True)
class DatasetURI:
    """A parsed, syntactically valid data set URI.

    - builtin: `name`.
    - dataset: `upload_id`, a UUID in its canonical form (lowercase, with hyphens).
    - file: `path`, the decoded absolute local path (not yet resolved against data roots).
    - http, https: `host` (lowercase) and `path`; `raw` is what is fetched.
    - s3: `host` is the bucket, `path` the key.
    """

    raw: str
    scheme: Scheme
    name: str | None = None
    upload_id: str | None = None
    path: str | None = None
    host: str | None = None


def clip(text: str, limit: int = _SHOWN) -> str:
    """`repr(text)`, cut so that a hostile value never fills a message."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def parse_dataset_uri(uri: str) -> DatasetURI:
    """The parsed URI, or InvalidURI saying what is wrong with it."""
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidURI(f"the data set URI is {len(uri)} characters long; at most "
                         f"{MAX_URI_LENGTH} are allowed")
    if not uri.isprintable():
        raise InvalidURI(f"the data set URI {clip(uri)} holds control characters")
    if "://" not in uri:
        raise InvalidURI(f"{clip(uri)} is not a data set URI; use one of "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise InvalidURI(f"unsupported URI scheme {clip(scheme)} in {clip(uri)}; use one of "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - a malformed port raises only when read
    except ValueError as e:
        raise InvalidURI(f"malformed data set URI {clip(uri)}: {e}") from None
    parse = {"builtin": _builtin, "dataset": _dataset, "file": _file}.get(scheme, _remote)
    return parse(uri, scheme, parts)


def _no_query(uri: str, parts: SplitResult, what: str) -> None:
    if parts.query or parts.fragment or uri.endswith(("?", "#")):
        raise InvalidURI(f"{clip(uri)}: {what} URIs take no query (?...) or fragment (#...)")


def _builtin(uri: str, scheme: Scheme, parts: SplitResult) -> DatasetURI:
    _no_query(uri, parts, "builtin://")
    name = parts.netloc or parts.path.strip("/")
    rest = parts.path.strip("/") if parts.netloc else ""
    if not name or rest or "/" in name:
        raise InvalidURI(f"{clip(uri)}: builtin:// URIs name one builtin set: builtin://NAME")
    return DatasetURI(raw=uri, scheme=scheme, name=name)


def _dataset(uri: str, scheme: Scheme, parts: SplitResult) -> DatasetURI:
    _no_query(uri, parts, "dataset://")
    text = parts.netloc
    if parts.path not in ("", "/"):
        raise InvalidURI(f"{clip(uri)}: dataset:// URIs name an upload by its id alone "
                         f"(dataset://ID), without a path ({clip(parts.path)})")
    try:
        upload_id = str(uuid.UUID(text))
    except ValueError:
        upload_id = ""
    # Only the canonical form (lowercase 8-4-4-4-12, as POST /v1/datasets returns it): ids are
    # looked up as strings, so another spelling of the same UUID would be another id.
    if not text or upload_id != text:
        raise InvalidURI(f"no uploaded data set {clip(text)}: upload ids are UUIDs in "
                         "lowercase (use the dataset://ID that POST /v1/datasets returned)")
    return DatasetURI(raw=uri, scheme=scheme, upload_id=upload_id)


def _file(uri: str, scheme: Scheme, parts: SplitResult) -> DatasetURI:
    if parts.netloc not in ("", "localhost"):
        raise InvalidURI(f"file:// URIs name a local path (file:///abs/path), not host "
                         f"{clip(parts.netloc)}")
    _no_query(uri, parts, "file://")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise InvalidURI(f"{clip(uri)}: the path must be absolute (file:///abs/path)")
    if "\x00" in path or not path.isprintable():
        raise InvalidURI(f"{clip(uri)}: the path holds control characters")
    return DatasetURI(raw=uri, scheme=scheme, path=path)


def _remote(uri: str, scheme: Scheme, parts: SplitResult) -> DatasetURI:
    if "@" in parts.netloc:  # stored in the job spec and its logs: never credentials
        raise InvalidURI(f"{scheme}:// data set URIs must not hold credentials (user@host); "
                         "configure access on the worker instead")
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidURI(f"{clip(uri)}: no host in the URI")
    if parts.fragment:
        raise InvalidURI(f"{clip(uri)}: {scheme}:// data set URIs take no fragment (#...)")
    if scheme == "s3":
        if parts.port is not None or parts.query:
            raise InvalidURI(f"{clip(uri)}: s3:// URIs are s3://bucket/key, without a port "
                             "or query")
        if not parts.path.strip("/"):
            raise InvalidURI(f"{clip(uri)}: no object key after the bucket (s3://bucket/key)")
    return DatasetURI(raw=uri, scheme=scheme, host=host, path=parts.path)
