"""The admin HTTP listener (loopback by default): /healthz and /readyz.

A deliberately tiny HTTP/1.1 responder on asyncio streams: two GET endpoints do not
justify a web framework. Requests are bounded (8 KiB of headers, 5 s to send them).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT_S = 5.0


async def start_admin(gateway, host: str, port: int):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        parts = head.split(b"\r\n", 1)[0].split()
        method, path = (parts[0], parts[1].split(b"?")[0]) if len(parts) >= 2 else (b"", b"")
        body: dict[str, Any]
        if method != b"GET":
            status, body = 405, {"error": "only GET is served here"}
        elif path == b"/healthz":
            status, body = 200, {"status": "alive"}
        elif path == b"/readyz":
            ok, why = await gateway.ready()
            status = 200 if ok else 503
            body = {"status": "ready" if ok else "not ready", "reason": why,
                    "connections": len(gateway.links), "sessions": len(gateway.sessions)}
        else:
            status, body = 404, {"error": "unknown path; try /healthz or /readyz"}
        payload = orjson.dumps(body)
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_HEAD)
