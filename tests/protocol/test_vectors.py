"""Golden vectors both ways: hex -> message, message -> hex; whole, byte by byte, with garbage."""

from __future__ import annotations

import hashlib
import hmac
import json
import pathlib

import pytest

from lmg.protocol.codec import FrameDecoder, decode_frame, encode, reference_decode_frame
from lmg.protocol.codes import MessageType
from lmg.protocol.jsonform import from_jsonable, to_jsonable

VECTORS_DIR = pathlib.Path(__file__).resolve().parents[1] / "vectors"
VECTORS = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(VECTORS_DIR.glob("*.json"))}


def test_there_is_a_vector_for_every_message_type():
    covered = {v["message"]["type"] for v in VECTORS.values()}
    assert covered == {t.name for t in MessageType}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_decodes_to_its_message_and_back(name):
    vector = VECTORS[name]
    frame = bytes.fromhex(vector["hex"])
    expected = from_jsonable(vector["message"])
    assert decode_frame(frame) == expected
    assert reference_decode_frame(frame) == expected
    assert to_jsonable(decode_frame(frame)) == vector["message"]
    assert encode(expected) == frame


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_byte_by_byte_and_with_trailing_garbage(name):
    frame = bytes.fromhex(VECTORS[name]["hex"])
    expected = from_jsonable(VECTORS[name]["message"])
    decoder = FrameDecoder()
    got = []
    for byte in frame + b"\x00garbage\xff":
        got += decoder.feed(bytes([byte]))
    assert got == [expected]
    assert decoder.skipped_bytes == 9


def test_auth_vector_is_the_documented_hmac_computed_independently():
    secret = bytes.fromhex("8f1e5b2c9a7d3e6f0b4a1c8d2e5f7a9b3c6d0e1f2a4b5c7d8e9f0a1b2c3d4e5f")
    hello = VECTORS["hello"]["message"]["fields"]
    nonce = bytes.fromhex(VECTORS["challenge"]["message"]["fields"]["nonce"])
    serial, firmware = hello["serial"].encode(), hello["firmware"].encode()
    signed = nonce + bytes([len(serial)]) + serial + bytes([len(firmware)]) + firmware + bytes([hello["protocol_version"]])
    mac = hmac.new(secret, signed, hashlib.sha256).hexdigest()
    assert VECTORS["auth"]["message"]["fields"]["mac"] == mac
