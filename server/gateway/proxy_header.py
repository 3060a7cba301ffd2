"""The PROXY protocol header a TCP load balancer puts before a terminal's bytes.

Behind HAProxy in TCP mode every terminal comes from the balancer's address, so the
per-address limits and lockouts would count the whole fleet as one client and the logs
would name the balancer. With `tcp_proxy_protocol` on, the balancer (HAProxy
`send-proxy-v2` or `send-proxy`) starts each connection with a header naming the
terminal's address, and the gateway uses that address instead. Rules:

- Pure: `read_proxy_header(buffered)` looks at the bytes received so far and answers
  NEED_MORE, or a `ProxyHeader` (the terminal's address, or None for a LOCAL header such
  as the balancer's own health check, and how many bytes the header took), or raises
  `ProxyHeaderError`. The caller owns the socket and the timeout.
- Versions 1 (text) and 2 (binary) are read, through the `proxy-protocol` library; what
  this module adds is the header's length, which the library does not return, so the
  terminal's first frame right behind the header is not lost.
- A header is at most `MAX_HEADER_BYTES`: version 1 is at most 107 bytes, version 2 is 16
  plus its address block and TLVs (HAProxy adds a few dozen bytes); 1 KiB of anything
  without a complete header is not a balancer.
- Only turn it on where nothing but the balancer can reach the listener: a header is
  believed, so a client that can connect directly may claim any address.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from proxyprotocol import ProxyProtocolIncompleteError
from proxyprotocol.detect import ProxyProtocolDetect
from proxyprotocol.result import is_ipv4, is_ipv6

MAX_HEADER_BYTES: Final = 1024
_V1_SIGNATURE, _V2_SIGNATURE = b"PROXY ", b"\r\n\r\n\x00\r\nQUIT\n"
_DETECT = ProxyProtocolDetect()


class ProxyHeaderError(ValueError):
    """The connection does not start with a PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    address: tuple[str, int] | None  # the terminal's (host, port); None: a LOCAL header, use the socket's peer
    length: int  # bytes of the header; the terminal's frames start here


NEED_MORE: Final = None


def read_proxy_header(buffered: bytes) -> ProxyHeader | None:
    """The header at the start of `buffered`, NEED_MORE (None) if it is not complete yet.
    Raises ProxyHeaderError for anything that is not a header, or one too long."""
    length = _header_length(buffered)
    if length is NEED_MORE:
        if len(buffered) >= MAX_HEADER_BYTES:
            raise ProxyHeaderError(f"no complete PROXY header in the first {MAX_HEADER_BYTES} bytes")
        return NEED_MORE
    try:
        result = _DETECT.unpack(buffered[:length])
    # Incomplete although the length said whole: the header lies about itself; the
    # library's syntax errors are ValueErrors.
    except (ProxyProtocolIncompleteError, ValueError) as exc:
        raise ProxyHeaderError(f"malformed PROXY header: {exc}") from exc
    if not result.proxied:
        return ProxyHeader(None, length)
    if is_ipv4(result) or is_ipv6(result):
        host, port = result.source
        return ProxyHeader((str(host), port), length)
    return ProxyHeader(None, length)  # UNKNOWN or a Unix socket: no address to use


def _header_length(buffered: bytes) -> int | None:
    """Bytes of the header at the start of `buffered`, None while it may still be one."""
    if buffered.startswith(_V2_SIGNATURE):
        if len(buffered) < 16:
            return NEED_MORE
        if buffered[12] & 0xF0 != 0x20:
            raise ProxyHeaderError(f"PROXY header version {buffered[12] >> 4} (only 1 and 2 exist)")
        length = 16 + struct.unpack_from("!H", buffered, 14)[0]
        if length > MAX_HEADER_BYTES:
            raise ProxyHeaderError(f"PROXY header of {length} bytes (at most {MAX_HEADER_BYTES})")
        return length if len(buffered) >= length else NEED_MORE
    if buffered.startswith(_V1_SIGNATURE):
        end = buffered.find(b"\r\n", 0, 107)
        if end < 0:
            if len(buffered) >= 107:  # the specification's longest line
                raise ProxyHeaderError("PROXY v1 line longer than 107 bytes")
            return NEED_MORE
        return end + 2
    if _V2_SIGNATURE.startswith(buffered[:12]) or _V1_SIGNATURE.startswith(buffered[:6]):
        return NEED_MORE  # a prefix of either signature
    raise ProxyHeaderError("the connection does not start with a PROXY protocol header")
