"""Device authentication, the pure part: what a terminal signs and how the server checks it.

The server sends CHALLENGE with a fresh 16-byte nonce; the terminal answers AUTH with
    mac = HMAC-SHA256(key = device secret (32 bytes),
                      msg = nonce ‖ serial ‖ firmware ‖ protocol_version)
where serial and firmware are written exactly as in the HELLO body (u8 length + UTF-8)
and protocol_version is one byte. Length prefixes make the message unambiguous: no two
(serial, firmware) pairs sign the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac

from construct import Struct

from protocol.messages import Hello
from protocol.schema import Bytes, Text, U8

NONCE_SIZE = 16
SECRET_SIZE = 32

#: The signed message, written in the same construct vocabulary as the wire.
SIGNED_AUTH_MESSAGE = Struct(
    "nonce" / Bytes(NONCE_SIZE),
    "serial" / Text(1),
    "firmware" / Text(1),
    "protocol_version" / U8,
)


def auth_message(nonce: bytes, serial: str, firmware: str, protocol_version: int) -> bytes:
    """The exact bytes a terminal signs for AUTH."""
    return SIGNED_AUTH_MESSAGE.build(
        {"nonce": nonce, "serial": serial, "firmware": firmware, "protocol_version": protocol_version}
    )


def auth_mac(secret: bytes, nonce: bytes, serial: str, firmware: str, protocol_version: int) -> bytes:
    """HMAC-SHA256 a terminal puts in AUTH.mac (32 bytes)."""
    return hmac.new(secret, auth_message(nonce, serial, firmware, protocol_version), hashlib.sha256).digest()


def verify_auth(secret: bytes, nonce: bytes, hello: Hello, mac: bytes) -> bool:
    """Constant-time check of an AUTH.mac against the HELLO that opened the session."""
    expected = auth_mac(secret, nonce, hello.serial, hello.firmware, hello.protocol_version)
    return hmac.compare_digest(expected, mac)
