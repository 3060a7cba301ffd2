"""docs/protocol.md section 5.1 is what the server's state machine does (session_doc.py)."""

from __future__ import annotations

from lmg.server.gateway.session_doc import render, update_document

from tests.protocol.test_doc import DOC


def test_the_state_tables_in_the_doc_are_generated_from_the_session():
    text = DOC.read_text(encoding="utf-8")
    assert "<!-- server-generated:session-states -->" in text
    assert update_document(text) == text, (
        "docs/protocol.md section 5.1 is stale: run `python -m lmg.server.gateway.session_doc docs/protocol.md`")


def test_the_tables_show_the_paths_the_handshake_diagram_leaves_out():
    tables = render()
    for path in ("GOODBYE SERVER_BUSY", "GOODBYE RATE_LIMITED", "GOODBYE AUTH_TIMEOUT", "AUTH_RESULT UNKNOWN_DEVICE",
                 "AUTH_RESULT LOCKED_OUT", "AUTH_RESULT DEVICE_DISABLED", "AUTH_RESULT UNSUPPORTED_VERSION",
                 "AUTH_RESULT BAD_SIGNATURE", "NACK AUTH_REQUIRED", "GOODBYE TAKEOVER"):
        assert path in tables, path
