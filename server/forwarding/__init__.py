"""Forwarding stored punches (and photos, device status and supervision warnings) to the
provincial system (docs/province-api.md).

Layers, each in its own module:

- `lmg.protocol.province`: the wire contract, pure (no I/O, no clock, no randomness of
  its own): signing, resident-ID encryption, request and response shapes, result codes,
  limits. The province simulator uses the same module.
- `policy`: when to try again, pure: exponential backoff with jitter (the random
  source is an argument) and a circuit breaker whose time is an input.
- `config`: the forwarder's section of the settings (`forward_*` keys), every limit with
  its reason.
- `forwarder`: the asyncio loop that claims from the store's outbox, batches, sends
  with aiohttp and acknowledges, fails or dead-letters each item.

The public entry points are `Forwarder`, `run_forwarder`, `summarize` and
`ForwarderConfig`. The first three are loaded on first use, so the settings (which
import `config`) do not pull in aiohttp.
"""

from __future__ import annotations

from typing import Any

from lmg.server.forwarding.config import ForwarderConfig

__all__ = ["Forwarder", "ForwarderConfig", "run_forwarder", "summarize"]


def __getattr__(name: str) -> Any:
    if name in ("Forwarder", "run_forwarder", "summarize"):
        from lmg.server.forwarding import forwarder

        return getattr(forwarder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
