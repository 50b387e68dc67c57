#!/usr/bin/env python3
"""A mail provider across the internet, for benchmarks: an SMTP sink behind a latency emulator.

    python bench/relay.py [--port 2525] [--rtt-ms 20] [--record ids.txt]   # until Ctrl+C

or, from a benchmark:

    with Relay(rtt_ms=20, record=workdir / "ids.txt") as relay:
        ... COURSE_SMTP_URL=relay.url ...
        relay.message_ids()  # every Message-ID accepted, in order (duplicates kept)

Two processes (spawned, so each has its own interpreter and its CPU use can be read apart):

- the sink: aiosmtpd, which accepts and discards mail. It advertises PIPELINING (RFC 2920) in
  its EHLO answer: aiosmtpd takes pipelined commands in order but does not say so. It records
  each accepted message's Message-ID, one a line, to count what was sent twice or never, and can
  answer 421 or 451 on demand (Relay.fail / Relay.recover), at MAIL or at the end of DATA; after
  a 421 it closes the connection, as a real server does.
- the latency emulator: an asyncio TCP proxy in front of the sink that holds every chunk, in
  each direction, for half the round trip, in order. A client that pipelines its commands pays
  one round trip per group of them, as across the internet; smtplib's sendmail(), which waits
  for each reply, pays one per command (four a message). Opening a connection costs one round
  trip before the greeting is sent, and the greeting takes another half.

The sink listens on 127.0.0.1 of the relay's network namespace; the proxy on `host`. With
`netns`, both processes enter that network namespace (/var/run/netns/NAME, as `ip netns`
makes it) before opening a socket. Relay.cpu() gives each process's CPU seconds so far: a
benchmark prints the proxy's share, to show that the emulator is not what limits it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import multiprocessing as mp
import os
import re
import signal
import socket
import sys
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CLONE_NEWNET = 0x40000000
# Where Relay.fail() answers: at MAIL FROM, or once the message's data is in.
AT_MAIL, AT_DATA = 0, 1
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
# A proxy direction stops reading while this much is waiting to be written on the other side.
_HIGH_WATER = 1 << 20


def enter_netns(name: str) -> None:
    """Move this process (its calling thread, and every thread it starts later) into a network
    namespace made by `ip netns add NAME`. Python 3.11 has no os.setns."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_wait(pid: int) -> float:
    """Seconds a process's threads were ready to run but waited for a CPU (Linux)."""
    waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that ended
            waited += int((task / "schedstat").read_text().split()[1])
    return waited / 1e9


# --- the sink ---------------------------------------------------------------------------------


class _Sink:
    """aiosmtpd handler: PIPELINING advertised, Message-IDs recorded, failures on demand."""

    def __init__(self, record_fd: int, shared: dict[str, Any]) -> None:
        self.record_fd = record_fd
        self.accepted = shared["accepted"]
        self.fail_code = shared["fail_code"]
        self.fail_count = shared["fail_count"]
        self.fail_at = shared["fail_at"]
        self.refused = shared["refused"]

    # aiosmtpd calls its hooks with positional arguments.
    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: PLR0917
        session.host_name = hostname
        # responses ends with "250 HELP": the capability goes before it.
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    def _failure(self, server, at: int) -> str | None:
        code = self.fail_code.value
        if not code or self.fail_at.value != at:
            return None
        with self.fail_count.get_lock():
            left = self.fail_count.value
            if left == 0:
                return None
            if left > 0:
                self.fail_count.value = left - 1
        self.refused.value += 1  # only this process's one event loop writes it
        if code == 421:
            # As a real server does after a 421: the answer, then the connection is closed.
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.7.0 Try again later, closing connection"
        return f"{code} 4.7.0 Try again later"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: PLR0917
        refusal = self._failure(server, AT_MAIL)
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        refusal = self._failure(server, AT_DATA)
        if refusal:
            return refusal
        content = envelope.content
        head = content.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(head)
        message_id = found.group(1) if found else b"<none>"
        os.write(self.record_fd, message_id + b"\n")  # O_APPEND: a whole line each time
        self.accepted.value += 1  # only this process's one event loop writes it
        return "250 OK"


def _sink_main(
    *, port: int, record: str, netns: str | None, shared: dict[str, Any], ready: Event
) -> None:
    if netns:
        enter_netns(netns)
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class Server(SMTP):
        def connection_made(self, transport):
            # Each reply line is its own write: without this, Nagle's algorithm holds the
            # second line until the proxy's delayed ACK, 40 ms later.
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)

    class Sink(Controller):
        def factory(self):
            return Server(self.handler, **self.SMTP_kwargs)

    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    # decode_data off: the content stays bytes, as a real relay takes it.
    controller = Sink(
        _Sink(fd, shared), hostname="127.0.0.1", port=port, data_size_limit=10 * 1024 * 1024
    )
    # SIGTERM and SIGINT wait for sigwait() below, in every thread (the controller's inherits it).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    controller.start()
    ready.set()
    signal.sigwait([signal.SIGTERM, signal.SIGINT])
    controller.stop()
    os.close(fd)


# --- the latency emulator ---------------------------------------------------------------------


class _Direction:
    """Chunks read from one side, written to the other once each has waited `delay` seconds:
    kept in arrival order, written together when due at the same moment."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, source: _Side) -> None:
        self.loop = loop
        self.delay = delay
        self.source = source  # paused while too much waits for the other side
        self.target: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.held = 0
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def push(self, data: bytes | None) -> None:
        """A chunk to pass on; None passes the end of the stream on."""
        self.queue.append((self.loop.time() + self.delay, data))
        if data:
            self.held += len(data)
            if self.held > _HIGH_WATER:
                self.source.pause()
        if self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        if self.target is None:  # the upstream connection is not open yet: connected() flushes
            return
        now = self.loop.time()
        due: list[bytes] = []
        end = False
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                end = True
                break
            due.append(data)
            self.held -= len(data)
        if due and not self.closed:
            self.target.write(b"".join(due))
        if end:
            self.closed = True
            self.queue.clear()
            self.target.close()  # after what is buffered has been written
            return
        if self.held <= _HIGH_WATER:
            self.source.resume()
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def connected(self, target: asyncio.Transport) -> None:
        self.target = target
        if self.queue and self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)


class _Side(asyncio.Protocol):
    """One TCP connection of a proxied pair: what it reads goes to `outgoing`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.outgoing: _Direction | None = None
        self.peer: _Side | None = None  # the other connection of the pair
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        assert self.outgoing is not None
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        assert self.outgoing is not None
        self.outgoing.push(None)
        return True  # the other side closes this one, in its own time

    def connection_lost(self, exc: Exception | None) -> None:
        if self.outgoing is not None and not self.outgoing.closed:
            self.outgoing.push(None)

    def pause_writing(self) -> None:
        if self.peer is not None:  # this side's reader is slow: stop reading the other side
            self.peer.pause()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume()

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()


class _Client(_Side):
    """A client's connection to the proxy; opens its own connection to the sink."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        super().__init__()
        self.upstream = upstream
        self.delay = delay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        server = _Side()
        server.peer, self.peer = self, server
        self.outgoing = _Direction(loop, self.delay, source=self)
        server.outgoing = _Direction(loop, self.delay, source=server)
        # The client's connection reaches the server after half a round trip.
        loop.call_later(self.delay, lambda: loop.create_task(self._open(server)))

    async def _open(self, server: _Side) -> None:
        assert self.transport is not None and self.outgoing is not None
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(lambda: server, *self.upstream)
        except OSError:
            self.transport.close()
            return
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert server.outgoing is not None
        server.outgoing.connected(self.transport)
        self.outgoing.connected(transport)


def _proxy_main(
    *,
    listen: tuple[str, int],
    upstream: tuple[str, int],
    delay: float,
    netns: str | None,
    ready: Event,
) -> None:
    if netns:
        enter_netns(netns)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Client(upstream, delay), *listen, reuse_address=True, backlog=512
        )
        for sock in server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepts
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        ready.set()
        await stop.wait()
        server.close()

    asyncio.run(serve())


# --- the two together -------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Relay:
    """The sink and the latency emulator, each in its own process; stop() ends both."""

    def __init__(
        self,
        *,
        record: Path,
        rtt_ms: float = 20.0,
        host: str = "127.0.0.1",
        port: int = 0,
        netns: str | None = None,
    ) -> None:
        self.record = Path(record)
        self.rtt_ms = rtt_ms
        self.host = host
        self.port = port
        self.netns = netns
        ctx = mp.get_context("spawn")
        self._ctx = ctx
        self._shared: dict[str, Any] = {
            "accepted": ctx.RawValue("q", 0),
            "refused": ctx.RawValue("q", 0),
            "fail_code": ctx.RawValue("i", 0),
            "fail_at": ctx.RawValue("i", AT_MAIL),
            "fail_count": ctx.Value("q", 0),
        }
        self.sink: Any = None
        self.proxy: Any = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> Relay:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        self.record.write_bytes(b"")
        if not self.port:
            if self.netns:
                raise ValueError("give the relay a port when it runs in a network namespace")
            self.port = _free_port(self.host)
        # The sink's port in the relay's namespace: 127.0.0.1 there is not 127.0.0.1 here, but
        # a port chosen here is as likely free there; the sink reports failure to bind anyway.
        sink_port = self.port + 1 if self.netns else _free_port("127.0.0.1")
        sink_ready, proxy_ready = self._ctx.Event(), self._ctx.Event()
        self.sink = self._ctx.Process(
            target=_sink_main,
            kwargs={
                "port": sink_port,
                "record": str(self.record),
                "netns": self.netns,
                "shared": self._shared,
                "ready": sink_ready,
            },
            daemon=True,
            name="relay-sink",
        )
        self.sink.start()
        self._wait(sink_ready, self.sink, timeout=timeout, what="the SMTP sink")
        self.proxy = self._ctx.Process(
            target=_proxy_main,
            kwargs={
                "listen": (self.host, self.port),
                "upstream": ("127.0.0.1", sink_port),
                "delay": self.rtt_ms / 2000,
                "netns": self.netns,
                "ready": proxy_ready,
            },
            daemon=True,
            name="relay-proxy",
        )
        self.proxy.start()
        self._wait(proxy_ready, self.proxy, timeout=timeout, what="the latency proxy")
        return self

    def _wait(self, ready: Event, proc: Any, *, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if not proc.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{what} did not start (exit code {proc.exitcode})")

    def stop(self) -> None:
        for proc in (self.proxy, self.sink):
            if proc is not None and proc.is_alive():
                proc.terminate()
        for proc in (self.proxy, self.sink):
            if proc is not None:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def accepted(self) -> int:
        """Messages accepted so far."""
        return int(self._shared["accepted"].value)

    @property
    def refused(self) -> int:
        """Transactions answered with a failure so far."""
        return int(self._shared["refused"].value)

    def fail(self, code: int = 451, *, at: int = AT_MAIL, count: int = -1) -> None:
        """Answer `code` (421 or 451, say) to the next `count` transactions (-1: until
        recover()), at MAIL FROM (AT_MAIL) or once the data is in (AT_DATA)."""
        self._shared["fail_at"].value = at
        with self._shared["fail_count"].get_lock():
            self._shared["fail_count"].value = count
        self._shared["fail_code"].value = code

    def recover(self) -> None:
        self._shared["fail_code"].value = 0

    def message_ids(self) -> list[str]:
        """Every Message-ID accepted so far, in order, duplicates kept."""
        return self.record.read_text().split()

    def pids(self) -> dict[str, int]:
        return {"sink": self.sink.pid, "proxy": self.proxy.pid}

    def cpu(self) -> dict[str, float]:
        """CPU seconds each process has used so far."""
        return {name: cpu_seconds(pid) for name, pid in self.pids().items()}

    def waited(self) -> dict[str, float]:
        """Seconds each process was ready to run but waited for a CPU, so far."""
        return {name: cpu_wait(pid) for name, pid in self.pids().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--record", type=Path, default=Path("relay-message-ids.txt"))
    parser.add_argument("--netns", default=None, help="an `ip netns` name to run in")
    args = parser.parse_args()
    relay = Relay(
        record=args.record, rtt_ms=args.rtt_ms, host=args.host, port=args.port, netns=args.netns
    ).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    print(f"relay: {relay.url}, {args.rtt_ms:g} ms round trip; Message-IDs in {args.record}")
    sys.stdout.flush()
    try:
        signal.sigwait([signal.SIGINT, signal.SIGTERM])
    finally:
        relay.stop()
        ids = relay.message_ids()
        print(f"accepted {relay.accepted:,} messages, {len(set(ids)):,} distinct Message-IDs")


if __name__ == "__main__":
    main()
