"""Console accounts: passwords, sessions, CSRF tokens, and the principal an account acts as.

Rules:
- Passwords are hashed with argon2id (argon2-cffi's `PasswordHasher`, its RFC 9106 low-memory
  defaults: 64 MiB, 3 passes, 4 lanes; 0.3 s of one core on the 2-core CI machine, so it runs off the event loop); the store keeps only the PHC string.
  A password has at least `MIN_PASSWORD_CHARS` (10) characters: NIST SP 800-63B asks 8 at
  least, and a bureau's shared desk deserves a margin.
- An unknown name is checked against a dummy hash, so a sign-in takes as long whether the
  name exists or not, and the page says the same: nobody learns which names exist.
- A session cookie holds 32 random bytes (URL-safe base64); the store keeps their SHA-256,
  as for API tokens: a random secret needs no slow hash, and a copy of the database signs
  nobody in. Each session has its own CSRF token (32 random bytes), compared in constant time.
- An account acts through the JSON API's own principal, an `ApiToken` value built here
  (never stored, no hash that any bearer token could match), so one rule decides who sees
  what (lmg.server.admin.api `ApiRequest.sees`, `list_scope`, `require_operator`):
  - a supervisor: its department and region, scopes read and write, pii if the account has it;
  - an operator: no department (it closes no warning); region-limited like a supervisor
    unless its region is the province (620000), where it is the platform's operator and
    also sees forwarding (the API's `operators_only` routes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from lmg.protocol.regions import PROVINCE
from lmg.storage import ApiToken, ConsoleAccount
from lmg.storage.console import ACCOUNT_NAME  # noqa: F401 - the rule of a name, re-exported for the pages

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024  # argon2 takes any length; this bounds the work a request can ask for
SESSION_BYTES = 32
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))  # for unknown names: the same work as a real check
_NO_TOKEN_HASH = b"\0" * 32  # the principal's: the API looks tokens up by hash, and no token hashes to zeros


class WeakPassword(ValueError):
    """The password is refused; the message says why."""


def check_password_rules(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise WeakPassword(f"a password has at most {MAX_PASSWORD_CHARS} characters")
    if len(set(password)) < 4:
        raise WeakPassword("that password repeats too few characters; use a passphrase")
    return password


def hash_password(password: str) -> str:
    """The argon2id PHC string of an acceptable password (WeakPassword otherwise)."""
    return _HASHER.hash(check_password_rules(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; `password_hash` None (an unknown or disabled name) checks
    a dummy hash and answers False, taking as long."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        _HASHER.verify(password_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None


def new_session_id() -> tuple[str, bytes]:
    """(the cookie value, the SHA-256 the store keeps)."""
    value = base64.urlsafe_b64encode(secrets.token_bytes(SESSION_BYTES)).decode().rstrip("=")
    return value, session_hash(value)


def session_hash(cookie_value: str) -> bytes:
    return hashlib.sha256(cookie_value.encode()).digest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def is_operator(account: ConsoleAccount) -> bool:
    return account.role == "operator"


def principal(account: ConsoleAccount) -> ApiToken:
    """The API principal the account acts as (module docstring)."""
    scopes = {"read", "write"} | ({"pii"} if account.pii else set())
    if is_operator(account):
        region = None if account.region_code == PROVINCE else account.region_code
        return ApiToken(account.name, _NO_TOKEN_HASH, frozenset(scopes), region, account.created_at_ms, None,
                        "console", None)
    return ApiToken(account.name, _NO_TOKEN_HASH, frozenset(scopes), account.region_code, account.created_at_ms,
                    None, "console", account.department)
