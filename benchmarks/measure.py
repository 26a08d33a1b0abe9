"""Run a command and write its peak RSS (KiB) to a file: python -m benchmarks.measure OUT -- command...

A process forked from a large parent starts with the parent's resident pages counted in its peak RSS. Launching
through this small process keeps a benchmark's own size (a console served in-process) out of the figure."""

from __future__ import annotations

import os
import subprocess
import sys


def main() -> None:
    out, command = sys.argv[1], sys.argv[3:]
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    with open(out, "w") as handle:
        handle.write(str(usage.ru_maxrss))
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
