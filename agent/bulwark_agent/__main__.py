"""bulwark-agent: enrol, then heartbeat with host facts and run backup and restore jobs.

bulwark-agent enrol --server https://console --token bwe_... [--ca ca.pem]
bulwark-agent run [--once]   (heartbeats, and runs the backups and restores the console queues)
bulwark-agent facts
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from bulwark_agent import facts
from bulwark_agent.client import AgentError, Client

logger = logging.getLogger("bulwark_agent")
DEFAULT_STATE = Path(os.environ.get("BULWARK_AGENT_STATE_DIR", "/var/lib/bulwark-agent"))


def _state_file(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) / "agent.json"


def _facts(args: argparse.Namespace, state: dict[str, Any] | None = None) -> dict[str, Any]:
    state = state or {}
    return facts.collect(
        override_machine_id=args.machine_id or state.get("machine_id", ""),
        override_hostname=args.hostname or state.get("hostname", ""),
    )


def enrol(args: argparse.Namespace) -> int:
    client = Client(args.server, ca_file=args.ca, allow_http=args.allow_http)
    reported = _facts(args)
    reported["heartbeat_seconds"] = args.interval
    answer = client.post("/api/agent/enrol/", {"token": args.token, "facts": reported})
    state = {
        "server": client.server,
        "ca": os.path.abspath(args.ca) if args.ca else "",
        "allow_http": args.allow_http,
        "key": answer["agent_key"],
        "machine": answer["machine"],
        "interval": args.interval,
        "machine_id": args.machine_id,
        "hostname": args.hostname,
    }
    path = _state_file(args)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(str(path) + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(state, handle)
    os.replace(str(path) + ".tmp", path)
    print(f"enrolled as machine {answer['machine']} of {client.server}")
    return 0


def _client(state: dict[str, Any], *, retry_seconds: float = 0.0) -> Client:
    client = Client(
        state["server"],
        ca_file=state.get("ca", ""),
        allow_http=state.get("allow_http", False),
        retry_seconds=retry_seconds,
    )
    client.key = state["key"]
    return client


def _do_jobs(args: argparse.Namespace, state: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    from bulwark_agent.backup import run_backup
    from bulwark_agent.restore import run_restore

    # Job calls ride out a dropped connection or a console restart for a while (each call is idempotent).
    client = _client(state, retry_seconds=args.retry_seconds)
    for job in jobs:
        try:
            if job.get("type") == "backup":
                logger.info(
                    "backup run %s: %s", job["run"], run_backup(client, int(job["run"]), Path(args.state_dir))
                )
            elif job.get("type") == "restore":
                logger.info("restore %s: %s", job["restore"], run_restore(client, int(job["restore"])))
        except AgentError as error:
            logger.error("job %s failed: %s", job, error)


def run(args: argparse.Namespace) -> int:
    path = _state_file(args)
    try:
        state = json.loads(path.read_text())
    except OSError:
        raise AgentError(f"not enrolled: {path} is missing (run `bulwark-agent enrol` first)") from None
    client = _client(state)
    interval = int(args.interval or state.get("interval") or 60)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def heartbeat() -> list[dict[str, Any]]:
        nonlocal interval
        try:
            reported = _facts(args, state)
            reported["heartbeat_seconds"] = interval
            answer = client.post("/api/agent/heartbeat/", {"facts": reported})
            interval = int(answer.get("heartbeat_seconds") or interval)
            logger.info("heartbeat sent")
            return list(answer.get("jobs") or [])
        except AgentError as error:
            if "refused (401)" in str(error) or "refused (403)" in str(error):
                raise
            logger.warning("%s; retrying", error)  # the console may be restarting: keep trying
            return []

    jobs = heartbeat()
    if args.once:
        _do_jobs(args, state, jobs)
        return 0

    def beat() -> None:  # heartbeats go on while a long backup runs
        while not stop.wait(interval):
            try:
                heartbeat()
            except AgentError:
                stop.set()

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()
    while not stop.is_set():
        _do_jobs(args, state, jobs)
        if stop.wait(args.poll):
            break
        try:
            jobs = list(client.get("/api/agent/jobs/").get("jobs") or [])
        except AgentError as error:
            if "refused (401)" in str(error) or "refused (403)" in str(error):
                raise
            logger.warning("%s; retrying", error)
            jobs = []
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bulwark-agent", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE))
    parser.add_argument("--machine-id", default="", help="override the host's machine id (cloned test hosts)")
    parser.add_argument("--hostname", default="", help="override the reported host name")
    commands = parser.add_subparsers(dest="command", required=True)
    enrol_parser = commands.add_parser("enrol", help="enrol this host with a one-time token")
    enrol_parser.add_argument("--server", required=True)
    enrol_parser.add_argument("--token", required=True)
    enrol_parser.add_argument(
        "--ca", default="", help="PEM file of the CA that signed the console's certificate"
    )
    enrol_parser.add_argument("--interval", type=int, default=60, help="heartbeat interval in seconds")
    enrol_parser.add_argument("--allow-http", action="store_true", help=argparse.SUPPRESS)
    run_parser = commands.add_parser("run", help="send heartbeats with host facts until stopped")
    run_parser.add_argument("--once", action="store_true")
    run_parser.add_argument("--interval", type=int, default=0)
    run_parser.add_argument("--poll", type=float, default=15.0, help="seconds between asking for jobs")
    run_parser.add_argument(
        "--retry-seconds",
        type=float,
        default=600.0,
        help="how long a job rides out a dropped connection before giving up",
    )
    commands.add_parser("facts", help="print the facts this host reports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.command == "enrol":
            return enrol(args)
        if args.command == "run":
            return run(args)
        print(json.dumps(_facts(args), indent=1))
        return 0
    except AgentError as error:
        print(f"bulwark-agent: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
