"""Polling helper shared by the test folders (each has its own conftest and WAIT_S)."""

from __future__ import annotations

import asyncio


async def wait_for(predicate, timeout: float, what: str = "condition", interval: float = 0.05):
    """Poll an (async or plain) predicate until true; return its value, or fail naming
    `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
