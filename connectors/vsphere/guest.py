"""Scripts inside a VM's guest through VMware Tools guest operations (no network path to the guest needed).

A policy's pre-snapshot script (freeze an application, flush a database) and post-snapshot script run with a
guest login: StartProgramInGuest, then ListProcessesInGuest until the process ends, and its exit code decides.
Linux guests run the script through /bin/sh -c, Windows guests through cmd.exe /c.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from connectors.base import ConnectorError
from connectors.vsphere.session import fault_message

SCRIPT_TIMEOUT = 3600.0
POLL_FIRST, POLL_MAX = 0.1, 2.0  # seconds between looks at the process: quick at first, then calmer


class GuestLoginRefused(ConnectorError):
    code = "guest-login"


class GuestUnavailable(ConnectorError):
    code = "guest-unavailable"


@dataclass(frozen=True)
class GuestLogin:
    username: str
    password: str

    def __repr__(self) -> str:  # never the password, in a log or a traceback
        return f"GuestLogin(username={self.username!r})"


def program_for(vm: Any, script: str) -> vim.vm.guest.ProcessManager.ProgramSpec:
    guest_id = str(getattr(vm.config, "guestId", "") or "").lower() if vm.config else ""
    if guest_id.startswith("win"):
        return vim.vm.guest.ProcessManager.ProgramSpec(
            programPath=r"C:\Windows\System32\cmd.exe", arguments="/c " + script
        )
    return vim.vm.guest.ProcessManager.ProgramSpec(
        programPath="/bin/sh", arguments="-c " + shlex.quote(script)
    )


def run_in_guest(
    content: Any,
    vm: Any,
    login: GuestLogin,
    script: str,
    *,
    phase: str,
    timeout: float = SCRIPT_TIMEOUT,
    env: dict[str, str] | None = None,
) -> None:
    """Run a script in the guest and wait for it; a non-zero exit, a refused login or absent VMware Tools is a
    ConnectorError saying which."""
    manager = content.guestOperationsManager.processManager
    auth = vim.vm.guest.NamePasswordAuthentication(username=login.username, password=login.password)
    spec = program_for(vm, script)
    spec.envVariables = [f"{key}={value}" for key, value in (env or {}).items()]
    try:
        pid = manager.StartProgramInGuest(vm, auth, spec)
        deadline = time.monotonic() + timeout
        pause = POLL_FIRST
        while True:
            processes = manager.ListProcessesInGuest(vm, auth, [pid])
            if processes and processes[0].endTime is not None:
                code = int(processes[0].exitCode or 0)
                if code:
                    raise ConnectorError(f"the {phase}-snapshot script in the guest exited with {code}")
                return
            if time.monotonic() > deadline:
                raise ConnectorError(
                    f"the {phase}-snapshot script in the guest ran longer than {timeout:.0f} s"
                )
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX)
    except vim.fault.InvalidGuestLogin:
        raise GuestLoginRefused(
            f"the guest refused the login of {login.username!r} for the {phase}-snapshot script"
        ) from None
    except vim.fault.GuestOperationsUnavailable as error:
        raise GuestUnavailable(
            f"guest operations are unavailable for the {phase}-snapshot script (VMware Tools not running, or the "
            f"VM is off): {fault_message(error)}"
        ) from None
    except vmodl.MethodFault as error:
        raise ConnectorError(f"the {phase}-snapshot script could not run: {fault_message(error)}") from None
