"""The artifact store: uploads, checkpoints and ONNX files under one root (torch-free).

The root is a local folder (the default) or any fsspec URL (``s3://bucket/prefix`` with the
``s3`` extra). Keys are relative, '/'-separated paths; URIs are ``root/key``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ArtifactStore:
    def __init__(self, root: str | Path, cache_dir: Path | None = None) -> None:
        root = str(root)
        if "://" not in root:
            root = str(Path(root).resolve())
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        self._protocol = root.split("://", 1)[0] if "://" in root else None
        # Remote files that onnxruntime or a loader needs as a local path are copied here.
        self.cache_dir = cache_dir or Path("var/cache/artifacts")
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    # --- names ---------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        key = key.strip("/")
        if not key or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"bad artifact key {key!r}")
        return f"{self.root}/{key}"

    def uri(self, key: str) -> str:
        path = self._path(key)
        return path if self.local or self._protocol is None else f"{self._protocol}://{path}"

    def key_of(self, uri: str) -> str:
        path = uri.split("://", 1)[1] if "://" in uri and not self.local else uri
        if not path.startswith(self.root + "/"):
            raise ValueError(f"{uri!r} is not in the artifact store {self.root!r}")
        return path[len(self.root) + 1 :]

    # --- writes ---------------------------------------------------------------------------------

    def put_file(self, local: Path, key: str) -> str:
        """Copy a local file in (atomically for a local root). Returns its URI."""
        dest = self._path(key)
        if self.local:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(dest + ".part")
            shutil.copyfile(local, tmp)
            tmp.replace(dest)
        else:
            self.fs.put_file(str(local), dest)
        return self.uri(key)

    def put_stream(self, stream: IO[bytes], key: str) -> str:
        dest = self._path(key)
        if self.local:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open(dest, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        return self.uri(key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # --- reads ---------------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def open(self, key: str) -> IO[bytes]:
        return self.fs.open(self._path(key), "rb")

    def modified(self, key: str) -> float | None:
        path = self._path(key)
        if not self.fs.exists(path):
            return None
        info = self.fs.info(path)
        return float(info.get("mtime") or info.get("LastModified", 0) or 0)

    def local_path(self, key: str) -> Path:
        """A local path holding the artifact: the file itself for a local root, else a copy
        downloaded once into the cache (keys are content-addressed or immutable here)."""
        path = self._path(key)
        if self.local:
            return Path(path)
        cached = self.cache_dir / key
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(cached.name + ".part")
            self.fs.get_file(path, str(tmp))
            tmp.replace(cached)
        return cached

    def get_file(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        self.fs.get_file(self._path(key), str(tmp))
        tmp.replace(dest)
        return dest


# Where each kind of artifact lives in the store.
def upload_key(dataset_id: str, filename: str) -> str:
    return f"uploads/{dataset_id}/{filename}"


def model_key(model_id: str) -> str:
    return f"models/{model_id}/generator.onnx"


def checkpoint_key(job_id: str) -> str:
    return f"checkpoints/{job_id}/checkpoint.pt"


SHARD_TAG = re.compile(r"^[0-9a-f]{1,32}$")


def sampling_shard_key(job_id: str, chunk: int, tag: str) -> str:
    """A batch sampling chunk's Parquet shard; `tag` (hex) is the claim's own, so that a
    worker that lost its lease never writes over the file of the one that took over."""
    if not SHARD_TAG.match(tag):
        raise ValueError(f"bad shard tag {tag!r}")
    return f"sampling/{job_id}/part-{chunk:05d}-{tag}.parquet"


def sampling_conditions_key(job_id: str, tag: str, chunk: int) -> str:
    """A chunk's conditions, copied once by the job's planner (`tag`: its claim's) when the
    source cannot be read a row range at a time in place (CSV, HDF5, ROOT, NPZ, builtins,
    remote files)."""
    if not SHARD_TAG.match(tag):
        raise ValueError(f"bad tag {tag!r}")
    return f"sampling/{job_id}/conditions-{tag}/{chunk:05d}.parquet"


PLOT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def report_key(model_id: str) -> str:
    return f"models/{model_id}/report.json"


def plot_key(model_id: str, name: str) -> str:
    if not PLOT_NAME.match(name) or name.startswith("."):
        raise ValueError(f"bad plot name {name!r}")
    return f"models/{model_id}/plots/{name}.png"
