"""Run a command as a member of the given cgroups: `cgexec.py PROCS... -- COMMAND ARGS...`.

Writes its own pid to each `cgroup.procs` file named before `--`, then execs COMMAND, so
COMMAND and everything it starts are members from their first instruction on (`clients.py`
says why the gluster clients must be). Standard library only: the node runs it by path as
`python -I -S cgexec.py ...`, which starts in a few milliseconds. Exit status 125 (nothing
run) when a cgroup cannot be joined.
"""

from __future__ import annotations

import os
import sys

CANNOT_JOIN = 125


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: cgexec.py CGROUP.PROCS... -- COMMAND [ARG...]", file=sys.stderr)
        return CANNOT_JOIN
    split = argv.index("--")
    procs, command = argv[:split], argv[split + 1 :]
    pid = str(os.getpid()).encode()
    for path in procs:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        except OSError as exc:
            print(f"cannot join cgroup {path}: {exc.strerror}", file=sys.stderr)
            return CANNOT_JOIN
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
    return CANNOT_JOIN


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
