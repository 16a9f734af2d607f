"""PID 1 of a gluster pool server's namespaces (run as a script, imports nothing of ours).

`python3 reaper.py MARKER READY_FILE [--isolate]`. With `--isolate` (a fresh mount
namespace), it first makes every mount private and lazily unmounts every copy of the host's
mounts but `/`, `/proc`, `/sys` and `/dev`: a copied FUSE mount would keep its client alive
after the host unmounts it, and a copied loop mount would keep the loop device busy. Then it
writes READY_FILE and reaps orphans (killed brick daemons would stay zombies without a PID 1
that waits) until SIGTERM. MARKER is only there to be found in the process table.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

KEEP = ("/", "/proc", "/sys", "/dev")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and i + 3 < len(field):
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _kept(target: str) -> bool:
    return any(target == k or (k != "/" and target.startswith(k + "/")) for k in KEEP)


def isolate() -> None:
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as info:
        targets = [_unescape(line.split()[4]) for line in info if line.strip()]
    for target in sorted(set(targets), key=len, reverse=True):
        if not _kept(target):
            subprocess.run(["umount", "-l", target], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    _marker, ready = sys.argv[1], sys.argv[2]
    # PID 1 of a namespace ignores every signal it has no handler for
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if "--isolate" in sys.argv[3:]:
        isolate()
    with open(ready, "w", encoding="utf-8") as f:
        f.write("ready\n")
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.5)


if __name__ == "__main__":
    main()
