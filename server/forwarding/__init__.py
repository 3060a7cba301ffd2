"""Forwarding stored punches to the provincial system (docs/province-api.md).

Layers, each in its own module:

- `province_api`: the wire contract, pure (no I/O, no clock, no randomness of its own):
  signing, resident-ID encryption, request and response shapes, result codes, limits.
- `policy`: when to try again, pure: exponential backoff with jitter (the random
  source is an argument) and a circuit breaker whose time is an input.
- `forwarder`: the asyncio loop that claims from the store's outbox, batches, sends
  with aiohttp and acknowledges, fails or dead-letters each item.
"""
