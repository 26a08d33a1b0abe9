"""Microsoft Hyper-V hosts and clusters through WinRM (pywinrm): PowerShell that answers in JSON.

WinRM is only the control channel; disk data travels over SMB (the protection issue). Authentication is NTLM,
Kerberos, CredSSP or Basic (HTTPS only); certificates are validated against the system store, an extra CA, or
a pinned SHA-256 fingerprint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from connectors import tls
from connectors.base import (
    NO_PROGRESS,
    BadCredentials,
    Change,
    ChangeIdRejected,
    ConnectorError,
    DiscoveredDisk,
    DiscoveredMachine,
    Endpoint,
    Inventory,
    Misconfigured,
    ProtocolError,
    Unreachable,
)
from connectors.hyperv import scripts
from engine.progress import Progress

TRANSPORTS = {"ntlm", "kerberos", "credssp", "basic"}


class HyperVConnector:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transport = str(endpoint.options.get("transport", "ntlm"))
        self.https = bool(endpoint.options.get("https", True))
        if self.transport not in TRANSPORTS:
            raise Misconfigured(
                f"unknown WinRM transport {self.transport!r} (one of {', '.join(sorted(TRANSPORTS))})"
            )
        if self.transport == "basic" and not self.https:
            raise Misconfigured("Basic authentication sends the password in clear: use it over HTTPS only")
        if self.transport == "kerberos" and importlib.util.find_spec("kerberos") is None:
            raise Misconfigured(
                "Kerberos needs the system's Kerberos libraries on the Bulwark host (apt-get install libkrb5-dev, "
                "then pip install pykerberos, and a krb5.conf for the domain); until then, use NTLM"
            )

    @property
    def port(self) -> int:
        return self.endpoint.port or (5986 if self.https else 5985)

    def _run(self, script: str) -> Any:
        """Run one script; its JSON answer, or a ConnectorError naming what went wrong."""
        import requests
        import winrm
        from winrm.exceptions import InvalidCredentialsError, WinRMError, WinRMTransportError

        if self.https:
            tls.probe(
                self.endpoint, self.port
            )  # trust, pinning and time-outs checked before any credential goes
        scheme = "https" if self.https else "http"
        url = f"{scheme}://{self.endpoint.address}:{self.port}/wsman"
        ca_file = None
        options: dict[str, Any] = {
            "transport": self.transport,
            "read_timeout_sec": max(int(self.endpoint.timeout) + 10, 30),
            "operation_timeout_sec": max(int(self.endpoint.timeout), 20),
        }
        if self.https:
            if self.endpoint.thumbprint or not self.endpoint.verify_tls:
                options["server_cert_validation"] = (
                    "ignore"  # the pinned fingerprint was checked by the probe
                )
            elif self.endpoint.ca_pem.strip():
                handle = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False)  # noqa: SIM115
                with handle:
                    handle.write(self.endpoint.ca_pem)
                ca_file = handle.name
                options["ca_trust_path"] = ca_file
        try:
            session = winrm.Session(url, auth=(self.endpoint.username, self.endpoint.secret), **options)
            response = session.run_ps(script)
        except InvalidCredentialsError:
            raise BadCredentials(
                f"{self.endpoint.address} refused the user name or password of {self.endpoint.username!r} "
                f"({self.transport.upper()})"
            ) from None
        except requests.exceptions.SSLError as error:
            raise tls.untrusted(self.endpoint, self.port, error) from None
        except requests.exceptions.ConnectTimeout:
            raise tls.network_error(self.endpoint, self.port, TimeoutError()) from None
        except requests.exceptions.ReadTimeout:
            raise tls.network_error(self.endpoint, self.port, TimeoutError()) from None
        except requests.exceptions.ConnectionError as error:
            reason = error.args[0] if error.args else error
            if "refused" in str(reason).lower():
                raise tls.network_error(self.endpoint, self.port, ConnectionRefusedError()) from None
            raise Unreachable(
                f"cannot reach WinRM at {self.endpoint.address}:{self.port}: {reason}"
            ) from None
        except (WinRMTransportError, WinRMError) as error:
            raise ProtocolError(f"WinRM at {self.endpoint.address}:{self.port} failed: {error}") from None
        finally:
            if ca_file:
                os.unlink(ca_file)
        if response.status_code != 0:
            detail = (
                response.std_err.decode("utf-8", "replace").strip() or f"exit code {response.status_code}"
            )
            raise ProtocolError(f"PowerShell on {self.endpoint.address} failed: {detail[:1000]}")
        try:
            return json.loads(response.std_out.decode("utf-8-sig"))
        except ValueError:
            raise ProtocolError(f"{self.endpoint.address} answered with something that is not JSON") from None

    def test(self) -> str:
        facts = self._run(scripts.PROBE)
        if not facts.get("HyperV"):
            raise Misconfigured(
                f"{facts.get('Host', self.endpoint.address)} answers WinRM but has no Hyper-V role"
            )
        return f"Hyper-V on {facts.get('OS', 'Windows')} ({facts.get('Host', '')})"

    def discover(self, progress: Progress = NO_PROGRESS) -> Inventory:
        progress.step(0, 1, "querying Hyper-V")
        answer = self._run(scripts.INVENTORY)
        try:
            machines = [machine_from(item, answer) for item in answer.get("VMs") or []]
        except (KeyError, TypeError, ValueError) as error:
            raise ProtocolError(f"unexpected inventory from {self.endpoint.address}: {error!r}") from None
        progress.step(1, 1, "done")
        cluster = str(answer.get("Cluster") or "")
        return Inventory(
            source_id=cluster or str(answer.get("Host") or self.endpoint.address),
            product=f"Hyper-V on {answer.get('OS', 'Windows Server')}",
            machines=machines,
            topology={
                "clusters": [cluster] if cluster else [],
                "hosts": sorted(str(node) for node in answer.get("Nodes") or []),
            },
        )

    def watch(self, on_change: Callable[[list[Change]], None], stop: threading.Event) -> None:
        raise ConnectorError("Hyper-V has no change feed over WinRM: scheduled discoveries follow it")

    @contextmanager
    def snapshot(
        self,
        external_id: str,
        datacenter: str,
        *,
        name: str,
        quiesce: bool,
        pre_script: str = "",
        post_script: str = "",
    ) -> Iterator[CheckpointSession]:
        """A (production) checkpoint, removed afterwards: always, on failure too. The policy's pre-script runs on
        the host before it (a failure stops the backup), the post-script right after it, also when it failed."""
        from connectors.hyperv.backup import parse_checkpoint

        steps = []
        if pre_script.strip():
            try:
                steps.append(_ran("pre", self._run(scripts.hook("pre", external_id, pre_script))))
            except ProtocolError as error:
                raise ConnectorError(f"the pre-snapshot script failed: {error}") from None
        warnings = []
        try:
            handle = parse_checkpoint(self._run(scripts.checkpoint(external_id, name, quiesce)))
            steps.append(f"checkpoint taken{' (production checkpoint)' if handle.quiesced else ''}")
        finally:
            # A failed post-script is a warning: the checkpoint is good, and must still be read and removed.
            if post_script.strip():
                try:
                    steps.append(_ran("post", self._run(scripts.hook("post", external_id, post_script))))
                except ProtocolError as error:
                    warnings.append(f"the post-snapshot script failed: {error}")
        try:
            session = CheckpointSession(self, external_id, handle)
            session.warnings = warnings
            session.steps = steps
            yield session
        finally:
            self._run(scripts.remove_checkpoint(external_id, handle.checkpoint))


def _ran(stage: str, answer: Any) -> str:
    """A step-log line for a script the host ran: its last lines of output."""
    output = str(answer.get("Output") or "") if isinstance(answer, dict) else ""
    tail = " ".join(output.strip().splitlines()[-3:])[:400]
    return f"{stage}-snapshot script ran on the host{': ' + tail if tail else ''}"


class CheckpointSession:
    """A checkpoint being backed up: its disks, readers over SMB, and RCT changed ranges."""

    tracking_just_enabled = False  # RCT is always on for configuration version 8+ VMs

    def __init__(self, connector: HyperVConnector, vm_id: str, handle: Any) -> None:
        self.connector = connector
        self.vm_id = vm_id
        self.handle = handle
        self.warnings: list[str] = []  # e.g. a post-snapshot script that failed
        self.steps: list[str] = []  # what happened on the host, in order (scripts with their output)

    @property
    def disks(self) -> list[Any]:
        return list(self.handle.disks)

    def open_disk(
        self, disk: Any, *, bytes_per_second: int | None = None, check: Callable[[], None] | None = None
    ) -> Any:
        """The checkpoint's disk as a read-only file; `check` is called during throttle waits and may raise."""
        from connectors.hyperv.backup import VirtualDiskOverSmb

        return VirtualDiskOverSmb(
            self.connector.endpoint, disk, bytes_per_second=bytes_per_second, check=check
        )

    def changed_areas(self, disk: Any, since: str) -> list[tuple[int, int]]:
        """Changed ranges since RCT id `since`, asked page by page until every byte is processed. An unknown
        reference point (a failed migration, a new VHD) is a rejected change id: the caller reads everything."""
        from connectors.hyperv.backup import parse_ranges

        areas: list[tuple[int, int]] = []
        offset = 0
        while offset < disk.capacity_bytes:
            try:
                answer = self.connector._run(
                    scripts.changed_ranges(self.vm_id, self.handle.checkpoint, disk.path, since, offset)
                )
            except ProtocolError as error:
                raise ChangeIdRejected(
                    f"Hyper-V rejected RCT id {since!r} for {disk.label}: {error}"
                ) from None
            ranges, processed, _size = parse_ranges(answer)
            if processed <= 0:
                raise ProtocolError("GetVirtualDiskChanges processed no bytes")
            areas.extend(ranges)
            offset += processed
        return areas


def _list(value: Any) -> list[Any]:
    """ConvertTo-Json turns a one-element array into the element itself, and an empty one into null."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def machine_from(item: dict[str, Any], answer: dict[str, Any]) -> DiscoveredMachine:
    vm_id = str(item["Id"]).strip("{}").lower()
    disks = [
        DiscoveredDisk(
            key=f"{disk.get('ControllerType', '')}:{disk.get('ControllerNumber', 0)}:{disk.get('ControllerLocation', 0)}",
            label=str(disk.get("Path", "")).replace("\\", "/").rsplit("/", 1)[-1],
            capacity_bytes=int(disk.get("Size") or 0),
            path=str(disk.get("Path", "")),
            change_tracking=None,
        )
        for disk in _list(item.get("Disks"))
    ]
    notes = str(item.get("Notes") or "")
    return DiscoveredMachine(
        identity=f"hyperv:{vm_id}",
        external_id=vm_id,
        name=str(item["Name"]),
        kind="vm",
        platform="hyperv",
        power_state=str(item.get("State") or ""),
        guest_os="",
        ip_addresses=[str(a) for a in _list(item.get("IPAddresses"))],
        cluster=str(answer.get("Cluster") or "") if item.get("IsClustered") else "",
        host=str(item.get("ComputerName") or answer.get("Host") or ""),
        folder=str(item.get("Path") or ""),
        attributes={"notes": notes} if notes else {},
        disks=disks,
        checkpoints=[str(c) for c in _list(item.get("Checkpoints"))],
        facts={"generation": item.get("Generation"), "configuration_version": item.get("Version")},
    )
