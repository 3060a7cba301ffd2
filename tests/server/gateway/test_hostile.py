"""Hostile input over real sockets: what an unauthenticated or misbehaving peer can make the
gateway hold, and the answers a half-closing terminal is still owed (issue 18, part 4)."""

from __future__ import annotations

import asyncio
import gc
import struct
import time
import weakref

from lmg.protocol import Ack, Hello, Nack, Punch, ResultCode, encode
from lmg.server.gateway.session import PRE_AUTH_MAX_FRAME_SIZE
from lmg.simulators.terminal import make_punch

from tests.server.conftest import wait_for


def header(msg_type: int, seq: int, body_len: int) -> bytes:
    return b"LM" + struct.pack(">BBHII", 1, 0, msg_type, seq, body_len)


async def test_before_authentication_a_frame_above_the_largest_hello_is_refused_at_its_header(gw):
    # Before: an unauthenticated connection could make the server hold ~64 KiB of a
    # half-sent frame (4,900 such connections: +313 MiB RSS); a valid HELLO is 1,047 bytes.
    assert PRE_AUTH_MAX_FRAME_SIZE == len(encode(Hello("s" * 255, "v" * 255, "m" * 255, "f" * 255, 1, 0))) < 1100
    client = await gw.raw()
    client.send_bytes(header(Hello.msg_type, 1, 60_000) + bytes(30_000))
    received = await client.closed_after()
    assert [(n.ref_seq, n.result) for n in received if isinstance(n, Nack)] == [(1, ResultCode.FRAME_TOO_LARGE)]
    # a half-sent frame that fits is held, but never more than the pre-auth limit
    holder = await gw.raw()
    holder.send_bytes(header(Hello.msg_type, 1, PRE_AUTH_MAX_FRAME_SIZE - 18) + bytes(900))
    await wait_for(lambda: any(link.decoder.buffered for link in gw.gateway.links), what="the partial frame held")
    assert max(link.decoder.buffered for link in gw.gateway.links) <= PRE_AUTH_MAX_FRAME_SIZE


async def test_after_authentication_the_session_limit_applies(gw):
    client = await gw.raw_authenticated()
    big = [make_punch(n, n, time.time_ns() // 1_000_000) for n in range(1, 101)]  # a 7 KB batch
    from lmg.protocol import PunchBatch

    client.send(PunchBatch(tuple(big)))
    ack = await client.expect(Ack)
    assert len(ack.results) == 100


async def test_a_half_closed_terminal_still_gets_the_acks_for_what_it_sent(gw):
    # Before: the gateway closed at the terminal's FIN; the punch was stored, its ACK never sent.
    client = await gw.raw_authenticated()
    seq = client.send(Punch.of(make_punch(1, 1, time.time_ns() // 1_000_000)))
    client.writer.write_eof()
    received = await client.closed_after()
    assert [(a.ref_seq, [r.result for r in a.results]) for a in received] == [(seq, [ResultCode.OK])]
    await wait_for(lambda: not gw.gateway.links, what="the connection closed after its answers")


async def test_a_closed_session_is_released_at_once_not_at_its_deadline(start_gateway):
    # Before: the deadline wheel held a closed link (1.5-2.3 KiB) until its auth or
    # heartbeat deadline came.
    gw = await start_gateway(auth_timeout_s=3600)
    client = await gw.raw()
    await wait_for(lambda: gw.gateway.links, what="the connection")
    (link,) = gw.gateway.links
    gone = weakref.ref(link)
    del link
    await client.close()
    await wait_for(lambda: not gw.gateway.links, what="the link closed")
    await asyncio.sleep(0)  # let the transport drop its protocol

    def released() -> bool:
        gc.collect()
        return gone() is None

    await wait_for(released, what="the closed link released")
    assert len(gw.gateway.wheel) == 0


async def test_a_record_number_reused_with_other_content_stays_visible_to_operators(gw):
    # Before: answered DUPLICATE and the difference was lost without a trace.
    client = await gw.raw_authenticated()
    now = time.time_ns() // 1_000_000
    first = make_punch(7, 1, now)
    for record in (first, first, first._replace(worker_id="62292319781105003X")):  # same, same, reused
        client.send(Punch.of(record))
        await client.expect(Ack)
    await wait_for(lambda: gw.gateway.counters["punches_conflicting"] == 1, what="the conflict counted")

    async def audited():
        return await gw.store.list_audit(event="punch_conflict", limit=5) or None

    (row,) = await wait_for(audited, what="the conflict in the audit log")
    assert (row.subject, row.detail["record_nos"]) == (gw.device.serial, [7])
    assert (await gw.store.get_punch(gw.device.serial, 7)).worker_id == first.worker_id  # the first stands
