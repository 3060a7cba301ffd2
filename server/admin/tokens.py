"""API tokens: how they look, how they are kept, what their scopes allow.

A token is `lmg_` followed by 43 URL-safe base64 characters (32 random bytes from the OS
CSPRNG). It is printed once, when created, and the store keeps only its SHA-256: a token
is as random as a key, so a slow password hash would add nothing, and a stolen database
yields no usable token. The `lmg_` prefix lets log scrubbing and secret scanners find a
token that leaked into text.

Scopes, each granted on its own (none implies another):

| scope | allows |
|---|---|
| `read` | every GET under /api/v1/ (resident ID numbers masked, no photos) |
| `write` | every change: provision, enable, disable, rotate, close a session, requeue dead letters |
| `pii` | resident ID numbers in full and punch photos (with `read`) |

A supervisor's token also carries a department (住建 or 人社) and a region: through every
route it sees only what that region covers (a county its county, a city its counties, the
province everything; api.py `ApiRequest`), and the operators' routes refuse it. An
operator's token has neither and is not limited (docs/supervision.md "API and CLI").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

PREFIX = "lmg_"
TOKEN_BYTES = 32
SCOPES = ("read", "write", "pii")
TOKEN_PATTERN = re.compile(r"lmg_[A-Za-z0-9_-]{43}")  # also what log redaction hides (server/logs.py)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def new_token() -> tuple[str, bytes]:
    """(the token to show once, the SHA-256 to store)."""
    token = PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode().rstrip("=")
    return token, token_hash(token)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def looks_like_token(text: str) -> bool:
    return TOKEN_PATTERN.fullmatch(text) is not None


def same_hash(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def parse_scopes(text: str) -> frozenset[str]:
    """'read,write' -> frozenset; ValueError naming the unknown scope and the known ones."""
    scopes = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}: use a comma list of {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"give at least one scope: {', '.join(SCOPES)}")
    return scopes


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(f"token name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter "
                         "or digit (it names the token in the audit log)")
    return name
