"""Fixtures for the loopback socket tests: a real gateway, real sockets, real SQLite.

- `start_gateway(**overrides)` starts an in-process `Gateway` on ephemeral loopback ports
  (TCP, WebSocket, admin) over a fresh SQLite store with one device provisioned, and
  returns a `RunningGateway` (ports, credentials, the store). `wrap=` puts a fault-
  injecting proxy between the gateway and the store. Everything is shut down afterwards.
- `RawClient` is a terminal at the byte level: it sends any bytes (garbage, oversize
  headers, unknown types) and reads back decoded frames, so a test sees exactly what the
  server answered and when it closed.
- `server_process(data_dir, ...)` runs `lmg serve` as a subprocess (for signals and
  crashes) and waits for its --ready-file.
- Every test runs under the log scan (`no_secret_in_logs`, autouse; log_scan.py): the
  `lmg` loggers at DEBUG through the node's formatters, and the output of the gateways it
  starts as processes, must hold no full resident ID number, device secret or API token.

Every wait is bounded (`WAIT_S`); a test that hangs fails with the reason instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lmg.protocol import Auth, AuthResult, Challenge, FrameDecoder, Hello, ResultCode, encode
from lmg.protocol.auth import auth_mac
from lmg.protocol.codes import Capability
from lmg.server.settings import Settings
from lmg.server.gateway.gateway import Gateway
from lmg.simulators.terminal import DeviceCredentials, TerminalConnection
from lmg.storage import Store, open_store
from tests import waiting
from tests.server import log_scan

REPO = Path(__file__).resolve().parents[2]
LMG = str(Path(sys.executable).with_name("lmg"))
WAIT_S = 10.0  # bound on any single wait for an answer or a close; generous for a loaded 2-core box
HOST = "127.0.0.1"
PROJECT = "P-TEST-01"
FIRMWARE = "test-1.0"

BASE_CONFIG = dict(
    tcp=f"{HOST}:0",
    ws=f"{HOST}:0",
    admin=f"{HOST}:0",
    shutdown_grace_s=3.0,
    presence_flush_s=0.5,
)


# --- the log scan -------------------------------------------------------------------------------


def _spy_on_secrets(monkeypatch, scan: log_scan.LogScan) -> None:
    """Record every device secret the stores of this process hand out during the test."""
    from lmg.server.forwarding.forwarder import Forwarder
    from lmg.storage.postgres import PostgresStore
    from lmg.storage.sqlite import SqliteStore

    def keep(result) -> None:
        devices = result.values() if isinstance(result, dict) else [result]
        for device in devices:
            secret = device if isinstance(device, bytes) else getattr(device, "secret", None)
            if isinstance(secret, bytes):
                scan.device_secrets.add(secret)

    for cls in (SqliteStore, PostgresStore):
        for name in ("add_device", "get_device", "get_devices", "rotate_device_secret"):
            real = getattr(cls, name, None)
            if real is None:
                continue

            async def spy(self, *args, _real=real, **kwargs):
                result = await _real(self, *args, **kwargs)
                keep(result)
                return result

            monkeypatch.setattr(cls, name, spy)
    real_init = Forwarder.__init__

    def forwarder_init(self, store, config, *args, **kwargs):
        if config.app_secret:
            scan.texts.add(config.app_secret)
        real_init(self, store, config, *args, **kwargs)

    monkeypatch.setattr(Forwarder, "__init__", forwarder_init)


@pytest.fixture(autouse=True)
def no_secret_in_logs(monkeypatch):
    """Fail the test if anything it logged (see log_scan.py) holds a full ID number, a
    device secret or an API token."""
    import logging

    scan = log_scan.LogScan()
    log_scan.CURRENT = scan
    _spy_on_secrets(monkeypatch, scan)
    monkeypatch.setenv("LMG_LOG_LEVEL", "debug")  # gateways started as processes (a flag still wins)
    logger = logging.getLogger("lmg")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(scan.catcher)
    try:
        yield scan
    finally:
        logger.removeHandler(scan.catcher)
        logger.setLevel(level)
        log_scan.CURRENT = None
    findings = scan.findings()
    if findings:
        pytest.fail("the logs hold what they must not:\n" + "\n".join(findings[:20]), pytrace=False)


# --- a terminal at the byte level ----------------------------------------------------------


class RawClient:
    """One TCP (optionally TLS) connection that sends raw bytes and reads decoded frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.items: list = []
        self.eof = False
        self.seq = 0

    @classmethod
    async def connect(cls, host: str, port: int, *, sock: socket.socket | None = None, ssl=None,
                      local_addr: str | None = None) -> "RawClient":
        if sock is not None:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            opened = asyncio.open_connection(sock=sock, ssl=ssl)
        else:
            opened = asyncio.open_connection(host, port, ssl=ssl, local_addr=(local_addr, 0) if local_addr else None)
        reader, writer = await asyncio.wait_for(opened, WAIT_S)
        return cls(reader, writer)

    def send(self, message) -> int:
        """Send `message` with the next seq; returns that seq."""
        self.seq += 1
        self.writer.write(encode(message._replace(seq=self.seq)))
        return self.seq

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    async def _read_more(self, timeout: float) -> None:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except asyncio.TimeoutError:  # a subclass of OSError: not a close
            raise
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            return
        self.items.extend(self.decoder.feed(data))

    async def receive(self, timeout: float = WAIT_S):
        """The next frame from the server; None once the server closed the connection."""
        while not self.items:
            if self.eof:
                return None
            try:
                await self._read_more(timeout)
            except asyncio.TimeoutError:
                raise AssertionError(f"no frame from the server within {timeout} s") from None
        return self.items.pop(0)

    async def expect(self, kind, timeout: float = WAIT_S):
        """The next frame, which must be of class `kind`."""
        item = await self.receive(timeout)
        assert isinstance(item, kind), f"expected {kind.__name__}, got {item!r}"
        return item

    async def nothing_within(self, seconds: float) -> None:
        """Assert the server sends nothing (and does not close) for `seconds`."""
        if not self.items and not self.eof:
            try:
                await self._read_more(seconds)
            except asyncio.TimeoutError:
                return
        raise AssertionError(f"expected silence, got {self.items!r} (eof={self.eof})")

    async def closed_after(self, timeout: float = WAIT_S) -> list:
        """Wait for the server to close; return the frames it sent first."""
        received = []
        while True:
            item = await self.receive(timeout)
            if item is None:
                return received
            received.append(item)

    async def authenticate(self, credentials: DeviceCredentials, firmware: str = FIRMWARE) -> AuthResult:
        """HELLO, CHALLENGE, AUTH; returns the AUTH_RESULT (refusals included, not raised)."""
        self.send(Hello(credentials.serial, "test", "raw", firmware, 1, int(Capability.FACE)))
        reply = await self.receive()
        if isinstance(reply, AuthResult):
            return reply
        assert isinstance(reply, Challenge), f"expected CHALLENGE, got {reply!r}"
        self.send(Auth(auth_mac(credentials.secret, reply.nonce, credentials.serial, firmware, 1)))
        return await self.expect(AuthResult)

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), WAIT_S)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass


async def wait_for(predicate, timeout: float = WAIT_S, what: str = "condition", interval: float = 0.05):
    """`tests.waiting.wait_for` with this folder's WAIT_S."""
    return await waiting.wait_for(predicate, timeout, what, interval)


# --- an in-process gateway ---------------------------------------------------------------------


@dataclass
class RunningGateway:
    gateway: Gateway
    store: Store  # the real store (under any wrapper the gateway was given)
    config: Settings
    device: DeviceCredentials
    host: str = HOST
    clients: list = field(default_factory=list)

    @property
    def tcp_port(self) -> int:
        return self.gateway.listening["tcp"][1]

    @property
    def ws_port(self) -> int:
        return self.gateway.listening["ws"][1]

    @property
    def admin_port(self) -> int:
        return self.gateway.listening["admin"][1]

    async def add_device(self, serial: str) -> DeviceCredentials:
        device = await self.store.add_device(serial, project_code=PROJECT, region_code="620100")
        return DeviceCredentials(device.serial, device.secret, PROJECT)

    async def raw(self, **kw) -> RawClient:
        client = await RawClient.connect(self.host, self.tcp_port, **kw)
        self.clients.append(client)
        return client

    async def raw_authenticated(self, credentials: DeviceCredentials | None = None, **kw) -> RawClient:
        client = await self.raw(**kw)
        result = await client.authenticate(credentials or self.device)
        assert result.result == ResultCode.OK, ResultCode(result.result).name
        return client

    async def terminal(self, credentials: DeviceCredentials | None = None, *, transport: str = "tcp",
                       authenticate: bool = True, **kw) -> TerminalConnection:
        port = self.tcp_port if transport == "tcp" else self.ws_port
        connection = TerminalConnection(credentials or self.device, self.host, port, transport=transport,
                                        **{"timeout_s": WAIT_S, **kw})
        self.clients.append(connection)
        await connection.open()
        if authenticate:
            await connection.authenticate()
        return connection

    async def stop(self) -> None:
        for client in self.clients:
            try:
                await asyncio.wait_for(client.close(), WAIT_S)
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        await self.gateway.shutdown()
        await self.store.close()


@pytest.fixture
async def start_gateway(tmp_path):
    """Factory: `await start_gateway(wrap=None, clock_ms=None, **config_overrides)` -> RunningGateway."""
    running: list[RunningGateway] = []

    async def start(*, wrap=None, clock_ms=None, **overrides) -> RunningGateway:
        data_dir = tmp_path / f"gateway{len(running)}"
        config = Settings.from_keys({**BASE_CONFIG, "data_dir": str(data_dir), **overrides})
        data_dir.mkdir()
        store = await open_store(config.store_url(), data_dir=config.gateway.data_dir, config=config.store)
        device = await store.add_device("GS-TEST-000001", project_code=PROJECT, region_code="620100")
        gateway = Gateway(config, wrap(store) if wrap else store, **({"clock_ms": clock_ms} if clock_ms else {}))
        await gateway.start()
        gw = RunningGateway(gateway, store, config, DeviceCredentials(device.serial, device.secret, PROJECT))
        running.append(gw)
        return gw

    yield start
    for gw in running:
        await gw.stop()


@pytest.fixture
async def gw(start_gateway) -> RunningGateway:
    """A gateway with the default test configuration."""
    return await start_gateway()


class StoreProxy:
    """Delegates everything to the real store; subclasses override what they fault or spy on."""

    def __init__(self, inner: Store):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def submit_punches(self, records):
        # through this proxy's store_punches, which subclasses override to fault or spy
        return asyncio.ensure_future(self.store_punches(records))


class GatedStore(StoreProxy):
    """`store_punches` waits for `release` before it reaches the real store."""

    def __init__(self, inner):
        super().__init__(inner)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def store_punches(self, records):
        self.entered.set()
        await self.release.wait()
        return await self.inner.store_punches(records)


# --- a gateway in a subprocess -----------------------------------------------------------------


async def provision(data_dir: Path, serials: list[str]) -> list[DeviceCredentials]:
    """Add devices to the SQLite store in `data_dir` (the server need not be running)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(None, data_dir=data_dir)
    try:
        out = []
        for serial in serials:
            device = await store.add_device(serial, project_code=PROJECT, region_code="620100")
            out.append(DeviceCredentials(device.serial, device.secret, PROJECT))
        return out
    finally:
        await store.close()


class ServerProcess:
    """`lmg serve` on ephemeral loopback ports; `ports` comes from its --ready-file."""

    def __init__(self, data_dir: Path, flags: list[str]):
        self.data_dir = data_dir
        self.flags = flags
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict[str, int] = {}
        self.log_path = data_dir / "server.log"
        log_scan.watch_file(self.log_path)

    async def start(self) -> "ServerProcess":
        ready = self.data_dir / "ready.json"
        if ready.exists():
            ready.unlink()
        log = open(self.log_path, "ab")
        self.proc = await asyncio.create_subprocess_exec(
            LMG, "serve", "--tcp", f"{HOST}:0", "--ws", f"{HOST}:0", "--admin", f"{HOST}:0",
            "--data-dir", str(self.data_dir), "--ready-file", str(ready), *self.flags,
            stdout=log, stderr=log, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while not ready.exists():
            if self.proc.returncode is not None:
                raise AssertionError(f"lmg serve exited with {self.proc.returncode}:\n{self.log()}")
            if loop.time() > end:
                raise AssertionError(f"lmg serve wrote no ready file within 30 s:\n{self.log()}")
            await asyncio.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["pid"] == self.proc.pid
        self.ports = {name: info[name][1] for name in ("tcp", "ws", "admin") if name in info}
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.returncode is None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(self.proc.wait(), WAIT_S)


@pytest.fixture
async def server_process():
    """Factory: `await server_process(data_dir, *flags)` -> started ServerProcess; killed afterwards."""
    started: list[ServerProcess] = []

    async def start(data_dir: Path, *flags: str) -> ServerProcess:
        process = ServerProcess(data_dir, list(flags))
        started.append(process)
        return await process.start()

    yield start
    for process in started:
        await process.kill()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """(cert.pem, key.pem): a self-signed certificate for localhost and 127.0.0.1, valid a day,
    made with `cryptography` (a dependency already), so no test waits on an openssl binary."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    where = tmp_path_factory.mktemp("tls")
    cert_path, key_path = where / "cert.pem", where / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
