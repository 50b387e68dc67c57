#!/usr/bin/env python3
"""Two worker hosts against one, each host in its own network namespace (run as root, Linux).

    sudo .venv/bin/python bench/scaleout.py --n 5000 [--smtp-connections 4] [--rtt-ms 20]
    sudo .venv/bin/python bench/scaleout.py --cleanup     # leftovers of a run that was killed

Builds a small network on this machine: a bridge, and four network namespaces joined to it by
veth pairs, each a "host" that shares nothing with the others but the network:

- db (10.251.0.2): a private PostgreSQL (initdb and pg_ctl in a temporary folder, run as the
  postgres user, listening on the db host's address) and a private redis-server;
- worker1, worker2 (10.251.0.3, .4): `celery -A worker worker`, as operators start it;
- relay (10.251.0.5): bench/relay.py, an SMTP sink behind a proxy that adds the round trip
  (20 ms by default). Linux's netem would do it on the veth, but this script uses the proxy
  everywhere: netem is often missing in containers.

The tick (the real one, as beat runs it) runs here, in the root namespace, which reaches every
host through the bridge. Run 1: one worker host; run 2: two; each on a fresh database of N
confirmed readers with lesson 1 due, timed until no delivery is pending. Prints lessons/s for
each, the ratio (target >= 1.8x), and what was lost or sent twice (the relay's record of
Message-IDs against the database). Exits 1 if a lesson was lost or sent twice.

All four "hosts" share this machine's CPUs. So that the run measures scaling rather than CPU,
each worker host keeps only a few SMTP connections (COURSE_SMTP_CONNECTIONS=4 by default): one
host is then bound by the relay's latency, not by the processors, and a second host can double
what goes out. The output says so.

Everything it makes (namespaces, veths, bridge, processes, temporary folders) is removed when
it ends, also on Ctrl+C or an error; --cleanup removes what a killed run left.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    audit,
    code_version,
    drive_ticks,
    loadavg,
    prepare,
    service_env,
    start_worker,
    stop_worker,
    wait_for_workers,
)
from bench.relay import Relay  # noqa: E402

PREFIX = "hwscale-"  # every namespace this script makes
BRIDGE = "hwscale-br"
VETH = "hwsc-"  # root-side veth names (at most 15 characters in all)
SUBNET = "10.251.0"
HOSTS = {"db": 2, "worker1": 3, "worker2": 4, "relay": 5}
TEMP_PREFIX = "homeward-scaleout-"
TARGET = 1.8
PG_PORT, REDIS_PORT, RELAY_PORT = 5432, 6379, 2525


def addr(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


def sh(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=check, capture_output=True, text=True)


def in_ns(host: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", PREFIX + host, *command]


def preflight() -> None:
    """Fail early, and say why, where network namespaces cannot be made."""
    if sys.platform != "linux":
        raise SystemExit("scaleout: needs Linux (network namespaces)")
    if os.geteuid() != 0:
        raise SystemExit("scaleout: run as root: it makes network namespaces and veth pairs")
    if shutil.which("ip") is None:
        raise SystemExit("scaleout: needs the `ip` command (Debian: iproute2)")
    probe = PREFIX + "probe"
    made = sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        raise SystemExit(
            f"scaleout: `ip netns add` does not work here: {made.stderr.strip()}. A container "
            "needs CAP_SYS_ADMIN and CAP_NET_ADMIN (docker run --privileged, say)."
        )
    sh("ip", "netns", "del", probe, check=False)
    for tool in ("redis-server",):
        if shutil.which(tool) is None:
            raise SystemExit(f"scaleout: needs {tool}")
    if not pg_bin():
        raise SystemExit("scaleout: needs PostgreSQL's server (/usr/lib/postgresql/*/bin/initdb)")


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def cleanup(*, quiet: bool = False) -> None:
    """Remove every namespace, veth and bridge named by this script, ending what runs in them,
    and the temporary folders of earlier runs (stopping a PostgreSQL left running in one)."""
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), TEMP_PREFIX + "*")):
        data = Path(folder) / "pg"
        if (data / "postmaster.pid").exists() and (pgb := pg_bin()):
            sh("runuser", "-u", "postgres", "--", str(pgb / "pg_ctl"), "-D", str(data),
               "-m", "immediate", "stop", check=False)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
        if not quiet:
            print(f"removed {folder}")
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "del", name, check=False)
        if not quiet:
            print(f"removed network namespace {name}")
    for link in [BRIDGE, *(VETH + h for h in HOSTS)]:
        if sh("ip", "link", "show", link, check=False).returncode == 0:
            sh("ip", "link", "del", link, check=False)
            if not quiet:
                print(f"removed link {link}")


def build_network() -> None:
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    for host in HOSTS:
        ns, outside = PREFIX + host, VETH + host
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", outside, "master", BRIDGE)
        sh("ip", "link", "set", outside, "up")
        sh(*in_ns(host, "ip", "addr", "add", f"{addr(host)}/24", "dev", "eth0"))
        sh(*in_ns(host, "ip", "link", "set", "eth0", "up"))
        sh(*in_ns(host, "ip", "link", "set", "lo", "up"))
    # Each host reaches the others, and this namespace, across the bridge.
    for host in HOSTS:
        for other in HOSTS:
            if other != host:
                ping = sh(*in_ns(host, "ping", "-c1", "-W2", addr(other)), check=False)
                if ping.returncode != 0 and shutil.which("ping"):
                    raise SystemExit(f"scaleout: {host} cannot reach {other}: {ping.stdout}")


class DbHost:
    """A private PostgreSQL and redis-server in the db namespace."""

    def __init__(self, workdir: Path) -> None:
        self.data = workdir / "pg"
        self.redis: subprocess.Popen[bytes] | None = None
        self.started = False

    def start(self) -> None:
        pgb = pg_bin()
        assert pgb is not None
        postgres = pwd.getpwnam("postgres")
        self.data.mkdir()
        os.chown(self.data, postgres.pw_uid, postgres.pw_gid)
        os.chmod(self.data.parent, 0o755)  # the postgres user walks into it
        user = ["runuser", "-u", "postgres", "--"]
        sh(*user, str(pgb / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
           "--no-sync")  # fmt: skip
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        options = (
            f"-c listen_addresses={addr('db')} -p {PG_PORT} -k {self.data} "
            "-c max_connections=300 -c shared_buffers=128MB"
        )
        sh(*in_ns("db", *user, str(pgb / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.data / "log"), "-w", "-t", "60", "start"))  # fmt: skip
        self.started = True
        self.redis = subprocess.Popen(
            in_ns("db", "redis-server", "--bind", addr("db"), "--port", str(REDIS_PORT),
                  "--save", "", "--appendonly", "no", "--protected-mode", "no"),
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        import redis

        client = redis.Redis(host=addr("db"), port=REDIS_PORT)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.redis.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("scaleout: redis-server did not start") from None
                time.sleep(0.05)  # polling, with the deadline above

    def createdb(self, name: str) -> str:
        pgb = pg_bin()
        assert pgb is not None
        sh(str(pgb / "createdb"), "-h", addr("db"), "-p", str(PG_PORT), "-U", "postgres", name)
        return f"postgresql://postgres@{addr('db')}:{PG_PORT}/{name}"

    def stop(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            try:
                self.redis.wait(10)
            except subprocess.TimeoutExpired:
                self.redis.kill()
        if self.started:
            pgb = pg_bin()
            assert pgb is not None
            sh("runuser", "-u", "postgres", "--", str(pgb / "pg_ctl"), "-D", str(self.data),
               "-m", "fast", "-w", "stop", check=False)  # fmt: skip
            self.started = False


def one_run(
    hosts: list[str], *, args: Any, db: DbHost, relay: Relay, workdir: Path
) -> tuple[float, Any]:
    """N fresh readers, `hosts` worker hosts: lessons/s, and the audit of what went out."""
    from course.db import engine_for
    from course.queue import app

    database_url = db.createdb(f"homeward_scaleout_{len(hosts)}")
    redis_url = f"redis://{addr('db')}:{REDIS_PORT}/0"
    env = service_env(
        database_url=database_url,
        redis_url=redis_url,
        smtp_url=relay.url,
        COURSE_SMTP_CONNECTIONS=str(args.smtp_connections),
        COURSE_SEND_BATCH=str(args.send_batch),
    )
    os.environ.update(env)
    from course.settings import get_settings

    get_settings.cache_clear()
    prepare(database_url, n=args.n, sequence_dir=Path(args.sequence))
    app.conf.update(broker_url=redis_url)
    received_before = len(relay.message_ids())
    workers = [
        start_worker(env, name=h, log=workdir / f"{h}-{len(hosts)}.log", netns=PREFIX + h)
        for h in hosts
    ]
    try:
        wait_for_workers(app, hosts, workers)
        base = relay.accepted
        drive = drive_ticks(database_url, accepted=lambda: relay.accepted, expected=base + args.n)
    finally:
        for w in workers:
            stop_worker(w)
    result = audit(database_url, relay.message_ids()[received_before:])
    engine_for(database_url).dispose()  # the run's connections, closed now
    return result.sent / drive.elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=5000, help="readers in each run")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument(
        "--smtp-connections", type=int, default=4, help="COURSE_SMTP_CONNECTIONS per host"
    )
    parser.add_argument(
        "--send-batch",
        type=int,
        default=25,
        help="COURSE_SEND_BATCH: small enough that N makes many batches for two hosts to share",
    )
    parser.add_argument(
        "--sequence", default=str(ROOT / "lessons" / "family-guide"), help="a sequence folder"
    )
    parser.add_argument("--cleanup", action="store_true", help="remove leftovers, then exit")
    args = parser.parse_args()
    if args.cleanup:
        cleanup()
        return
    preflight()
    cleanup(quiet=True)

    def interrupted(signum: int, frame: object) -> None:
        raise SystemExit(f"scaleout: stopped by signal {signum}; cleaning up")

    signal.signal(signal.SIGTERM, interrupted)
    load_before = loadavg()
    workdir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    db = DbHost(workdir)
    relay = Relay(
        record=workdir / "message-ids.txt",
        rtt_ms=args.rtt_ms,
        host=addr("relay"),
        port=RELAY_PORT,
        netns=PREFIX + "relay",
    )
    ok = False
    try:
        build_network()
        db.start()
        relay.start()
        one, audit_one = one_run(["worker1"], args=args, db=db, relay=relay, workdir=workdir)
        two, audit_two = one_run(
            ["worker1", "worker2"], args=args, db=db, relay=relay, workdir=workdir
        )
        ok = audit_one.clean and audit_two.clean
    finally:
        relay.stop()
        db.stop()
        if not ok:
            logs = workdir.with_name(workdir.name + "-logs")
            for log in workdir.glob("worker*.*"):
                logs.mkdir(exist_ok=True)
                shutil.copy(log, logs)
            if logs.exists():
                print(f"scaleout: worker logs kept in {logs}")
        cleanup(quiet=True)
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = loadavg()
    print(
        f"readers per run: {args.n:,}  relay round trip: {args.rtt_ms:g} ms  database: private "
        f"PostgreSQL on the db host  worker code: {code_version()}"
    )
    print(
        f"each worker host: COURSE_SMTP_CONNECTIONS={args.smtp_connections}, "
        f"COURSE_SEND_BATCH={args.send_batch}. All hosts share this machine's "
        f"{os.cpu_count()} CPUs: few connections a host keep one host bound by the relay's "
        "latency, not the CPUs, so the runs measure scaling out."
    )
    print(f"one worker host:  {one:,.1f} lessons/s   {audit_one.line()}")
    print(f"two worker hosts: {two:,.1f} lessons/s   {audit_two.line()}")
    print(f"ratio: {two / one:.2f}x   (target >= {TARGET}x)")
    print(f"  load average (1, 5, 15 min): before {load_before}, after {load_after}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
