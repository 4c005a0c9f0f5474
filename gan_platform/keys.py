"""API keys as the settings hold them: `name:scope+scope:sha256hex` entries (API_KEYS). Only
the SHA-256 digest of a key is stored. The API authenticates with these (service.auth); the
worker reads which names are admins (an admin's job may train on any owner's upload)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

SCOPES = frozenset({"train", "sample", "admin"})


@dataclass(frozen=True)
class KeyEntry:
    name: str
    scopes: frozenset[str]
    digest: bytes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(entries: list[str]) -> list[KeyEntry]:
    """`name:scope+scope:sha256hex` -> KeyEntry; a malformed entry raises ValueError."""
    out = []
    for entry in entries:
        parts = entry.strip().split(":")
        if len(parts) != 3:
            raise ValueError(f"API_KEYS entry {entry[:40]!r}: expected name:scopes:sha256hex")
        name, scopes_text, digest = parts
        scopes = frozenset(s for s in scopes_text.replace("|", "+").split("+") if s)
        if not name or not scopes or not scopes <= SCOPES:
            raise ValueError(f"API_KEYS entry for {name!r}: scopes must be among {sorted(SCOPES)}")
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"API_KEYS entry for {name!r}: the third part must be a SHA-256 "
                             "hex digest of the key, not the key itself")
        out.append(KeyEntry(name=name, scopes=scopes, digest=raw))
    return out


def admin_names(entries: Iterable[str]) -> frozenset[str]:
    """The names of the keys with the `admin` scope."""
    return frozenset(e.name for e in parse_keys(list(entries)) if "admin" in e.scopes)
