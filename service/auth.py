"""API keys: `Authorization: Bearer <key>`, checked against SHA-256 hashes in settings.

`API_KEYS` holds one entry per key, `name:scope+scope:sha256hex` (comma-separated or a JSON
list). The key itself is never stored: only its SHA-256 digest, compared in constant time.
Keys are random 256-bit tokens (`python -m service.auth NAME train+sample` makes one), so an
unsalted fast hash is enough: there is nothing to brute-force.

Scopes: `train` (submit, list, read and cancel jobs; upload data sets), `sample` (read and
sample models), `admin` (everything, and every owner's jobs). A non-admin key sees and cancels
only the jobs it submitted: another owner's job answers 404, as if it did not exist.

With no key configured the API is open (every caller is the anonymous admin), unless
`AUTH_REQUIRED` is set: then every request but the health checks gets 401.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gan_platform.keys import SCOPES, KeyEntry, hash_key, parse_keys
from gan_platform.settings import Settings
from service.problems import Problem

__all__ = ["SCOPES", "Principal", "authenticate", "authorize", "hash_key", "parse_keys",
           "require"]

log = logging.getLogger("service.auth")

bearer = HTTPBearer(auto_error=False, description="An API key from API_KEYS")


@dataclass(frozen=True)
class Principal:
    name: str | None  # None: auth is off (anonymous admin)
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def owner(self) -> str | None:
        """The owner recorded on jobs and data sets; also the filter for non-admins."""
        return self.name

    def can_see(self, owner: str | None) -> bool:
        return self.is_admin or (owner is not None and owner == self.name)


ANONYMOUS = Principal(name=None, scopes=SCOPES)


def authenticate(settings: Settings, token: str | None) -> Principal:
    keys = _keys(settings)
    if not keys:
        if settings.AUTH_REQUIRED:
            raise _unauthorized("authentication is required and no API key is configured "
                                "(set API_KEYS)")
        return ANONYMOUS
    if not token:
        raise _unauthorized("send an API key as 'Authorization: Bearer <key>'")
    digest = hashlib.sha256(token.encode()).digest()
    found = None
    for entry in keys:  # every entry compared, in constant time
        if hmac.compare_digest(entry.digest, digest):
            found = entry
    if found is None:
        raise _unauthorized("unknown API key")
    return Principal(name=found.name, scopes=found.scopes)


@lru_cache(maxsize=16)
def _parsed(entries: tuple[str, ...]) -> list[KeyEntry]:
    return parse_keys(list(entries))


def _keys(settings: Settings) -> list[KeyEntry]:
    return _parsed(tuple(settings.API_KEYS))


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, title="Unauthorized", type="unauthorized",
                   headers={"WWW-Authenticate": 'Bearer realm="gan-service"'})


def authorize(settings: Settings, token: str | None, scope: str) -> Principal:
    """The Principal of `token`, which must hold `scope` (or `admin`): 401 or 403 otherwise.
    The HTTP routes (`require`) and the gRPC server check keys with it."""
    principal = authenticate(settings, token)
    if scope not in principal.scopes and not principal.is_admin:
        raise Problem(403, f"this API key lacks the {scope!r} scope",
                      title="Forbidden", type="forbidden")
    return principal


def require(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: the caller's Principal, which must hold `scope` (or `admin`)."""
    assert scope in SCOPES

    async def dependency(  # async: a hash and a comparison, no thread hop for them
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        settings: Settings = request.app.state.services.settings
        principal = authorize(settings, credentials.credentials if credentials else None, scope)
        request.state.principal = principal
        return principal

    return dependency


async def principal_of(request: Request) -> Principal:
    """The Principal set by the router's `require` dependency. A route whose router checked
    no scope fails closed (500, logged) rather than treating the caller as an admin."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        log.error("no scope check ran for %s %s: refused", request.method, request.url.path)
        raise Problem(500, "this route checks no API key scope; refused (a bug: see the log)",
                      title="Internal Server Error", type="no-scope-check")
    return principal


PrincipalDep = Annotated[Principal, Depends(principal_of)]


def main(argv: list[str]) -> int:
    """`python -m service.auth NAME SCOPES`: print a new key and its API_KEYS entry."""
    if len(argv) != 2:
        print("usage: python -m service.auth NAME train+sample|admin", file=sys.stderr)
        return 2
    name, scopes = argv
    key = "gan_" + secrets.token_urlsafe(32)
    entry = f"{name}:{scopes}:{hash_key(key)}"
    parse_keys([entry])
    print(f"key (give it to the user, it is not stored): {key}")
    print(f"API_KEYS entry (store this):                 {entry}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
