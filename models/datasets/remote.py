"""http(s):// and s3:// data sets: fetched through fsspec into a local file, then read as one.

Only hosts (s3: buckets) listed in `allowed_hosts` may be named; None or an empty list allows
none, as Settings.ALLOWED_HOSTS documents. Redirects are refused, since one could lead off
the allowed hosts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from models.datasets.base import DataError
from models.datasets.files import SUFFIX_FORMATS
from models.datasets.uri import REMOTE_SCHEMES, DatasetURI, parse_dataset_uri

__all__ = ["MAX_DOWNLOAD_BYTES", "REMOTE_SCHEMES", "check_host", "fetch"]
MAX_DOWNLOAD_BYTES = 8 * 1024**3
_CHUNK = 1024**2


def check_host(uri: DatasetURI | str, allowed_hosts: Sequence[str] | None) -> str:
    """The URI's host (bucket for s3://), or DataError unless it is allowed."""
    parsed = uri if isinstance(uri, DatasetURI) else parse_dataset_uri(uri)
    host = parsed.host or ""
    allowed = sorted({h.lower() for h in allowed_hosts or ()})
    if not host or host not in allowed:
        what = "bucket" if parsed.scheme == "s3" else "host"
        listed = ", ".join(allowed) or "(none: set ALLOWED_HOSTS)"
        raise DataError(f"{what} {host!r} is not allowed for {parsed.scheme}:// data sets; "
                        f"allowed: {listed}")
    return host


def _open_options(scheme: str) -> dict[str, object]:
    if scheme == "s3":
        return {}
    # block_size 0: stream the body (no HEAD, no range requests). max_redirects 1: aiohttp
    # raises TooManyRedirects at the first redirect instead of following it.
    return {"block_size": 0, "max_redirects": 1}


def _describe(error: BaseException) -> str:
    # fsspec reports a refused redirect (and any failed HEAD) as FileNotFoundError: look inside.
    causes = [error, error.__cause__]
    if any(type(c).__name__ == "TooManyRedirects" for c in causes):
        return "it redirects, and redirects are refused (name the final URL)"
    if isinstance(error, FileNotFoundError):
        return "not found"
    return f"{type(error).__name__}: {error}"


def fetch(parsed: DatasetURI, allowed_hosts: Sequence[str] | None, folder: Path) -> Path:
    """Download `parsed` into `folder`; the file keeps the URI's extension when it has a known
    one (the format then follows it, as for file://: allowed hosts are the operator's)."""
    check_host(parsed, allowed_hosts)
    uri, scheme = parsed.raw, parsed.scheme
    if scheme == "s3":
        try:
            import s3fs  # noqa: F401 - fsspec needs it for s3://, say so plainly if absent
        except ImportError:
            raise DataError("s3:// data sets need the s3fs package "
                            "(pip install 'gan-service[s3]')") from None
    import fsspec

    suffix = PurePosixPath(parsed.path or "").suffix.lower()
    target = folder / ("download" + (suffix if suffix in SUFFIX_FORMATS else ""))
    try:
        with fsspec.open(uri, "rb", **_open_options(scheme)) as src, target.open("wb") as dst:
            copied = 0
            while chunk := src.read(_CHUNK):
                copied += len(chunk)
                if copied > MAX_DOWNLOAD_BYTES:
                    raise DataError(f"{uri} is larger than {MAX_DOWNLOAD_BYTES} bytes")
                dst.write(chunk)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - network and HTTP errors come in many types
        raise DataError(f"could not download {uri}: {_describe(e)}") from e
    if target.stat().st_size == 0:
        raise DataError(f"{uri} is empty")
    return target

