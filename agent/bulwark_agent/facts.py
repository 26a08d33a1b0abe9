"""Host facts from the kernel's own files: no third-party package, no shelling out."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import socket
import struct
from pathlib import Path
from typing import Any

# File systems worth reporting (pseudo file systems such as proc, sysfs, tmpfs and overlay are left out).
REAL_FILE_SYSTEMS = {
    "ext2",
    "ext3",
    "ext4",
    "xfs",
    "btrfs",
    "zfs",
    "vfat",
    "exfat",
    "ntfs",
    "ntfs3",
    "f2fs",
    "jfs",
    "reiserfs",
}


def machine_id(root: Path = Path("/")) -> str:
    for candidate in ("etc/machine-id", "var/lib/dbus/machine-id", "sys/class/dmi/id/product_uuid"):
        try:
            value = (root / candidate).read_text().strip().lower()
        except OSError:
            continue
        if value:
            return value
    raise RuntimeError(
        "this host has no machine id (/etc/machine-id); create one with systemd-machine-id-setup"
    )


def os_name(root: Path = Path("/")) -> str:
    try:
        for line in (root / "etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def boot_time() -> int:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def volumes() -> list[dict[str, Any]]:
    found = []
    seen = set()
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) < 3 or parts[2] not in REAL_FILE_SYSTEMS:
            continue
        device, mountpoint, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        if mountpoint in seen:
            continue
        seen.add(mountpoint)
        try:
            stat = os.statvfs(mountpoint)
        except OSError:
            continue
        found.append(
            {
                "device": device,
                "mountpoint": mountpoint,
                "filesystem": fstype,
                "size_bytes": stat.f_blocks * stat.f_frsize,
                "free_bytes": stat.f_bavail * stat.f_frsize,
            }
        )
    return found


def disks() -> list[dict[str, Any]]:
    found = []
    base = Path("/sys/block")
    if not base.is_dir():
        return found
    for entry in sorted(base.iterdir()):
        if entry.name.startswith(("loop", "ram", "zram", "dm-", "sr", "md")):
            continue
        try:
            sectors = int((entry / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if sectors == 0:
            continue
        model = ""
        with contextlib.suppress(OSError):
            model = (entry / "device" / "model").read_text().strip()
        found.append({"device": f"/dev/{entry.name}", "size_bytes": sectors * 512, "model": model})
    return found


def _ipv4(interface: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            packed = fcntl.ioctl(
                probe.fileno(), 0x8915, struct.pack("256s", interface.encode()[:15])
            )  # SIOCGIFADDR
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def ip_addresses() -> list[str]:
    addresses = []
    for _, name in socket.if_nameindex():
        if name == "lo":
            continue
        address = _ipv4(name)
        if address:
            addresses.append(address)
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[5] != "lo" and not parts[0].startswith("fe80"):
                raw = parts[0]
                addresses.append(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw)))
    except OSError:
        pass
    return addresses


def collect(*, override_machine_id: str = "", override_hostname: str = "") -> dict[str, Any]:
    from bulwark_agent import __version__

    hostname = override_hostname or socket.gethostname()
    return {
        "machine_id": override_machine_id or machine_id(),
        "hostname": hostname,
        "fqdn": override_hostname or socket.getfqdn(),
        "os": os_name(),
        "kernel": platform.release(),
        "architecture": platform.machine(),
        "cpus": os.cpu_count() or 0,
        "memory_bytes": memory_bytes(),
        "boot_time": boot_time(),
        "volumes": volumes(),
        "disks": disks(),
        "ip_addresses": ip_addresses(),
        "agent_version": __version__,
    }
