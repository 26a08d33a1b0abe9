"""Real disk images for the catalog, built with Debian's own tools and no mount: mkfs.ext4 -d, mkfs.xfs -p
(a protofile), mkfs.btrfs --rootdir, mkntfs + ntfscp, mkfs.vfat + mtools, sfdisk for MBR and GPT tables."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import BinaryIO

from tests.peers import require_peer

MIB = 1024 * 1024
GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"


def _tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    require_peer(found is not None, f"{name} is missing (make peer-deps installs it)")
    return str(found)


def _run(*command: str, **options: object) -> None:
    subprocess.run(command, check=True, capture_output=True, **options)  # type: ignore[call-overload]


def sample_tree(root: Path, *, seed: int = 1) -> Path:
    """A small tree with the cases a catalog must get right: nested folders, a symlink, a hard link, a sparse file,
    a unicode name, a binary file whose content is checked after restore."""
    import random

    rng = random.Random(seed)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "home" / "alice" / "docs").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "app.conf").write_text("listen 8443\n")
    os.link(root / "etc" / "app.conf", root / "etc" / "app-hard.conf")
    (root / "home" / "alice" / "docs" / "report.pdf").write_bytes(rng.randbytes(300_000))
    (root / "home" / "alice" / "docs" / "\u00dcbersicht \u2013 2026.txt").write_text("unicode name\n")
    (root / "home" / "config-link").symlink_to("../etc/app.conf")
    with open(root / "home" / "sparse.img", "wb") as sparse:
        sparse.truncate(8 * MIB)
        sparse.seek(5 * MIB)
        sparse.write(b"data in the middle")
    return root


def ext4(path: Path, tree: Path, size_mb: int = 32, *, inodes: int = 0) -> Path:
    extra = ["-N", str(inodes)] if inodes else []
    _run(_tool("mkfs.ext4"), "-q", "-F", "-b", "4096", *extra, "-d", str(tree), str(path), f"{size_mb}M")
    return path


def btrfs(path: Path, tree: Path, size_mb: int = 128) -> Path:
    with open(path, "wb") as image:
        image.truncate(size_mb * MIB)
    _run(_tool("mkfs.btrfs"), "-q", "-f", "--rootdir", str(tree), str(path))
    return path


def xfs(path: Path, tree: Path, size_mb: int = 300) -> Path:
    """XFS needs 300 MiB at least; the protofile describes the tree (regular files, folders, symlinks)."""
    lines = ["bulwark", "0 0"]

    def describe(folder: Path, depth: int) -> None:
        for item in sorted(folder.iterdir()):
            if item.is_symlink():
                lines.append(f"{'  ' * depth}{item.name} l--777 0 0 {os.readlink(item)}")
            elif item.is_dir():
                lines.append(f"{'  ' * depth}{item.name} d--755 0 0")
                describe(item, depth + 1)
                lines.append(f"{'  ' * depth}$")
            elif " " not in item.name:
                lines.append(f"{'  ' * depth}{item.name} ---644 0 0 {item}")

    lines.append("d--755 0 0")
    describe(tree, 1)
    lines.append("$")
    proto = path.with_suffix(".proto")
    proto.write_text("\n".join(lines) + "\n")
    with open(path, "wb") as image:
        image.truncate(size_mb * MIB)
    _run(_tool("mkfs.xfs"), "-q", "-f", "-p", str(proto), str(path))
    return path


def ntfs(path: Path, files: dict[str, bytes], size_mb: int = 16) -> Path:
    """NTFS with files in its root (ntfscp writes into existing folders only)."""
    with open(path, "wb") as image:
        image.truncate(size_mb * MIB)
    _run(
        _tool("mkntfs"),
        "-q",
        "-F",
        "-Q",
        "-s",
        "512",
        "-p",
        "0",
        "-H",
        "0",
        "-S",
        "0",
        "-L",
        "DATA",
        str(path),
    )
    for name, content in files.items():
        source = path.with_name(f"ntfs-source-{name}")
        source.write_bytes(content)
        _run(_tool("ntfscp"), "-f", str(path), str(source), name)
    return path


def fat(path: Path, tree: Path, size_mb: int = 16) -> Path:
    with open(path, "wb") as image:
        image.truncate(size_mb * MIB)
    _run(_tool("mkfs.vfat"), "-n", "BULWARK", str(path))
    environment = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for item in sorted(tree.rglob("*")):
        if item.is_symlink() or " " in item.name or not item.name.isascii():
            continue
        target = "::/" + str(item.relative_to(tree))
        if item.is_dir():
            _run(_tool("mmd"), "-i", str(path), target, env=environment)
        elif item.is_file():
            _run(_tool("mcopy"), "-i", str(path), str(item), target, env=environment)
    return path


def partitioned(path: Path, scheme: str, volumes: list[tuple[Path, str]]) -> tuple[Path, list[int]]:
    """A disk with an MBR ("dos") or GPT table holding each image as a partition, 1 MiB aligned; the
    partitions' byte offsets."""
    offsets, lines, position = [], [f"label: {scheme}", ""], MIB
    for image, kind in volumes:
        size = image.stat().st_size
        lines.append(f"start={position // 512}, size={size // 512}, type={kind}")
        offsets.append(position)
        position += -(-size // MIB) * MIB
    with open(path, "wb") as disk:
        disk.truncate(position + MIB)  # room for the backup GPT
    _run(_tool("sfdisk"), "-q", str(path), input="\n".join(lines).encode())
    with open(path, "r+b") as disk:
        for (image, _), offset in zip(volumes, offsets, strict=True):
            disk.seek(offset)
            _copy_sparse(image, disk)
    return path, offsets


def _copy_sparse(image: Path, disk: BinaryIO) -> None:
    """Copy an image into place, leaving its all-zero stretches as holes."""
    start = disk.tell()
    zero = bytes(MIB)
    with open(image, "rb") as source:
        while block := source.read(MIB):
            if block == zero[: len(block)]:
                disk.seek(len(block), os.SEEK_CUR)
            else:
                disk.write(block)
    disk.seek(start)


def gpt_ext4_ntfs(folder: Path, name: str, tree: Path, ntfs_files: dict[str, bytes]) -> bytes:
    """A guest's disk as the vcsim tests back it up: GPT with an ext4 system volume of `tree` and an NTFS one."""
    ext = ext4(folder / f"{name}-ext.img", tree, size_mb=16)
    data = ntfs(folder / f"{name}-ntfs.img", ntfs_files, size_mb=8)
    disk, _ = partitioned(folder / f"{name}.img", "gpt", [(ext, GPT_LINUX), (data, GPT_BASIC_DATA)])
    return disk.read_bytes()
