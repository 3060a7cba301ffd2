"""schemathesis against the live admin API of a real `lmg serve`, with no token and with each scope.

Every operation of /api/v1/openapi.json is called with generated inputs (valid and
invalid); each answer must be documented (status, content type, body schema), no
answer may be a 5xx, and a scoped route must refuse a request without a token. The
document is the code's own (server/admin/openapi.py), so this also proves it is true.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation

from lmg.server.admin import tokens

WHO = {"nobody": None, "read": "read", "write": "write", "pii": "pii", "all": "read,write,pii"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """`lmg serve` on fresh SQLite with a device and one token per scope set."""
    import asyncio

    from lmg.storage import open_store

    data = tmp_path_factory.mktemp("live-api")
    made: dict[str, str] = {}

    async def provision() -> None:
        store = await open_store(None, data_dir=data)
        try:
            await store.add_device("GS-LIVE-000001", project_code="P-LIVE", region_code="620100")
            for who, scopes in WHO.items():
                if scopes is not None:
                    token, digest = tokens.new_token()
                    await store.create_api_token(f"st-{who}", digest, tokens.parse_scopes(scopes))
                    made[who] = token
        finally:
            await store.close()

    asyncio.run(provision())
    ready = data / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "lmg.server.cli", "serve", "--data-dir", str(data), "--tcp",
                             "127.0.0.1:0", "--ws", "", "--admin", "127.0.0.1:0", "--ready-file", str(ready),
                             "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "lmg serve did not get ready"
            time.sleep(0.05)
        host, port = json.loads(ready.read_text())["admin"]
        yield f"http://{host}:{port}", made
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def operations(base: str) -> list:
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def empty_window(case) -> bool:
    """Whether a generated request names a period that ends before it starts."""
    query = case.query or {}
    since, until = str(query.get("since", "")), str(query.get("until", ""))
    if since.isdigit() and until.isdigit() and int(until) <= int(since):
        return True
    body = case.body if isinstance(case.body, dict) else {}
    start, end = body.get("start_date"), body.get("end_date")
    return isinstance(start, str) and isinstance(end, str) and end < start  # ISO dates sort as text


def typed_arguments(case) -> bool:
    """Whether a generated request queues a command: which arguments a type requires, and
    their limits in UTF-8 bytes and in one frame, are in the schema's description, not its
    grammar (JSON Schema counts characters), so schema-valid arguments can be refused."""
    return case.method.upper() == "POST" and case.path.endswith("/commands")


def key_personnel_rules(case) -> bool:
    """Whether a generated request records a bid award or a personnel change: a resident ID
    number's GB 11643 check digit, a person named twice in one post and a change from a person
    to the same person are the store's checks, beyond JSON Schema's grammar, so schema-valid
    bodies can be refused (with 400 naming the field)."""
    return case.method.upper() == "POST" and case.path in ("/api/v1/bid-awards", "/api/v1/personnel-changes")


def sealed_cursor(case) -> bool:
    """Whether a generated request pages a roster with a cursor: the cursor is sealed (it
    ends at a resident ID number), so only one the API made opens; any other text of the
    schema's alphabet is refused with 400, which JSON Schema cannot tell apart."""
    return case.path.endswith("/workers") and "after" in (case.query or {})


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_is_documented_and_none_is_a_server_error(live, mode):
    # Each generated request goes out once per token: none, and one per scope set. (The
    # schemathesis pytest plugin's lazy schema does not run under this pytest, so the
    # operations' hypothesis strategies are driven here directly.)
    base, made = live
    found = operations(base)
    assert len(found) >= 12

    for operation in found:
        raw = operation.definition.raw
        if mode is GenerationMode.NEGATIVE and not raw.get("parameters") and "requestBody" not in raw:
            continue  # nothing to make invalid
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case) -> None:
            # an empty time window (until <= since, a project ending before it starts) is
            # refused with 400 on purpose; JSON Schema cannot say so, so schemathesis would
            # call it valid data rejected
            excluded = [positive_data_acceptance] if (empty_window(case) or typed_arguments(case)
                                                      or key_personnel_rules(case) or sealed_cursor(case)) else []
            # a case made invalid in its headers (no Authorization) goes out as made
            whos = ["nobody"] if case.meta and case.meta.is_negative_at(ParameterLocation.HEADER) else WHO
            for who in whos:
                headers = {"Authorization": f"Bearer {made[who]}"} if who in made else {}
                case.call_and_validate(base_url=base, headers=headers, excluded_checks=excluded)

        check()
