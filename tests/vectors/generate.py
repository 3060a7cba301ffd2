"""Write the golden vectors: one JSON file per example frame (hex + decoded message).

Run `python tests/vectors/generate.py` after adding an example; existing files are never
overwritten unless `--force` is given, because a changed vector means a changed wire
format, which is a decision to make on purpose (and to document in docs/protocol.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from lmg.protocol.auth import auth_mac  # noqa: E402
from lmg.protocol.codec import encode  # noqa: E402
from lmg.protocol.codes import Capability, Direction, MessageType, ResultCode, VerifyMode, WorkerRole  # noqa: E402
from lmg.protocol.jsonform import to_jsonable  # noqa: E402
from lmg.protocol.messages import *  # noqa: E402,F403

HERE = pathlib.Path(__file__).resolve().parent
T0 = 1_763_942_400_000  # 2025-11-24 00:00:00 UTC in ms
SNAPSHOT = b"\xff\xd8\xff\xe0" + b"face-snapshot" * 20 + b"\xff\xd9"  # a stand-in JPEG
SNAPSHOT_SHA = hashlib.sha256(SNAPSHOT).digest()
FACE = b"\xff\xd8\xff\xe0" + b"roster-face" * 30 + b"\xff\xd9"
FACE_SHA = hashlib.sha256(FACE).digest()
NONCE = bytes(range(16))
SECRET = bytes.fromhex("8f1e5b2c9a7d3e6f0b4a1c8d2e5f7a9b3c6d0e1f2a4b5c7d8e9f0a1b2c3d4e5f")

PUNCH = PunchRecord(1001, T0 + 7 * 3600_000 + 12_345, "620102198503124516", Direction.IN, VerifyMode.FACE, 364, len(SNAPSHOT), SNAPSHOT_SHA)

EXAMPLES: dict[str, tuple[str, object]] = {
    "hello": ("terminal opens a session", Hello("GS-LZ-000123", "ExampleVendor", "FT-200", "2.4.1", 1, Capability.FACE | Capability.CARD | Capability.TEMPERATURE | Capability.PHOTO_UPLOAD, 1)),
    "challenge": ("server's nonce", Challenge(NONCE, T0, 1)),
    "auth": ("signed answer (secret in docs/protocol.md, Authentication)", Auth(auth_mac(SECRET, NONCE, "GS-LZ-000123", "2.4.1", 1), 2)),
    "auth_result": ("authenticated: heartbeat every 30 s", AuthResult(ResultCode.OK, 30, T0 + 5, 65536, 500, 0, 2)),
    "auth_result_bad_signature": ("wrong secret", AuthResult(ResultCode.BAD_SIGNATURE, 0, T0 + 5, 65536, 0, 0, 2)),
    "auth_result_locked_out": ("locked out: retry in 60 s", AuthResult(ResultCode.LOCKED_OUT, 0, T0 + 5, 65536, 0, 60, 2)),
    "heartbeat": ("heartbeat with 2 punches waiting", Heartbeat(T0 + 30_000, 2, 1, 3)),
    "goodbye": ("server going away, reconnect in 5 s", Goodbye(ResultCode.SHUTTING_DOWN, 5, 9)),
    "time_sync_request": ("terminal asks for the time", TimeSyncRequest(T0 + 60_000, 4)),
    "time_sync_reply": ("server time for the terminal", TimeSyncReply(T0 + 60_000, T0 + 60_120, T0 + 60_121, 5)),
    "ack": ("heartbeat acknowledged (no records)", Ack(3, MessageType.HEARTBEAT, T0 + 30_010, (), 6)),
    "ack_batch": ("batch of three: stored, duplicate, bad ID", Ack(7, MessageType.PUNCH_BATCH, T0 + 7 * 3600_000 + 60_000, (RecordResult(2001, ResultCode.OK), RecordResult(2002, ResultCode.DUPLICATE), RecordResult(2003, ResultCode.INVALID_WORKER_ID)), 8)),
    "nack": ("unknown message type 0x0777", Nack(12, 0x0777, ResultCode.UNSUPPORTED_MESSAGE, 9)),
    "punch": ("a face punch with a photo and a temperature", Punch.of(PUNCH, 5)),
    "punch_batch": ("offline backlog of three records, the third with a wrong check digit", PunchBatch((
        PunchRecord(2001, T0 + 6 * 3600_000, "620503199207081235", Direction.IN, VerifyMode.CARD, 0, 0, bytes(32)),
        PunchRecord(2002, T0 + 6 * 3600_000 + 4_000, "62292319781105003X", Direction.IN, VerifyMode.ID_CARD, 0, 0, bytes(32)),
        PunchRecord(2003, T0 + 6 * 3600_000 + 9_000, "620102198503124525", Direction.OUT, VerifyMode.FINGERPRINT, 0, 0, bytes(32)),
    ), 7)),
    "photo_chunk": ("first and only chunk of the punch's snapshot", PhotoChunk(1001, SNAPSHOT_SHA, len(SNAPSHOT), 0, SNAPSHOT, 6)),
    "photo_query": ("where to resume after a reconnect", PhotoQuery(1001, SNAPSHOT_SHA, len(SNAPSHOT), 10)),
    "photo_status": ("server holds the whole photo", PhotoStatus(SNAPSHOT_SHA, ResultCode.OK, len(SNAPSHOT), 10)),
    "device_status": ("periodic health report", DeviceStatus(86_400, 1_048_576, 0, 0, 42, 318, 0, 0, 412, 11)),
    "roster_add": ("add a worker with a face photo", RosterAdd(43, "620503199207081235", "张三", "A1B2C3D4", WorkerRole.WORKER, len(FACE), FACE_SHA, 20)),
    "roster_update": ("promote to on-site manager, no new face", RosterUpdate(44, "620503199207081235", "张三", "A1B2C3D4", WorkerRole.MANAGER, 0, bytes(32), 21)),
    "roster_remove": ("remove a worker", RosterRemove(45, "62292319781105003X", 22)),
    "face_chunk": ("the face photo in one chunk", FaceChunk(FACE_SHA, len(FACE), 0, FACE, 23)),
    "roster_version_query": ("which roster does the terminal hold?", RosterVersionQuery(24)),
    "roster_version_reply": ("terminal holds version 45, 317 workers", RosterVersionReply(24, 45, 317, 12)),
    "set_time": ("set the terminal clock", SetTime(T0 + 120_000, 25)),
    "config_get": ("read two keys", ConfigGet((ConfigKey("volume"), ConfigKey("relay_ms")), 26)),
    "config_reply": ("their values", ConfigReply(26, (ConfigEntry("volume", "7"), ConfigEntry("relay_ms", "3000")), 13)),
    "config_set": ("change the volume", ConfigSet((ConfigEntry("volume", "5"),), 27)),
    "reboot": ("reboot in 10 s", Reboot(10, 28)),
    "door_open": ("open lane 1 for 5 s", DoorOpen(1, 5, 29)),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="overwrite existing vectors")
    args = parser.parse_args()
    covered = set()
    for name, (description, message) in EXAMPLES.items():
        covered.add(message.msg_type)
        path = HERE / f"{name}.json"
        if path.exists() and not args.force:
            continue
        vector = {"name": name, "description": description, "hex": encode(message).hex(), "message": to_jsonable(message)}
        path.write_text(json.dumps(vector, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path.name}")
    missing = [t.name for t in MessageType if t not in covered]
    if missing:
        print(f"no example for: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
