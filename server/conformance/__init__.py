"""The vendor conformance kit: a server that grades one real terminal against docs/protocol.md (issue 18)."""
