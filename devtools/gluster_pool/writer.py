"""A writer for fault tests (run as a script, imports nothing of ours).

`python3 writer.py FILE LOG [INTERVAL]` appends the line `<n>\n` to FILE and fsyncs it every
INTERVAL seconds (0.1), n counting from 0, and appends one line per attempt to LOG:
`OK <n> <start> <seconds>` once the write and the fsync returned, `ERR <n> <start> <seconds>
<errno name>` when either failed (the file is then reopened at the next attempt). It stops
at SIGTERM, after the attempt in progress. `parse_attempts` in writer_log.py reads LOG.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time

stopping = False


def _stop(*_: object) -> None:
    global stopping
    stopping = True


def main() -> None:
    target, log_path = sys.argv[1], sys.argv[2]
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
    signal.signal(signal.SIGTERM, _stop)
    fd: int | None = None
    n = 0
    with open(log_path, "a", buffering=1, encoding="utf-8") as log:
        while not stopping:
            start = time.time()
            try:
                if fd is None:
                    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(fd, f"{n}\n".encode())
                os.fsync(fd)
                log.write(f"OK {n} {start:.3f} {time.time() - start:.3f}\n")
            except OSError as exc:
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                log.write(f"ERR {n} {start:.3f} {time.time() - start:.3f} {name}\n")
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                fd = None
            n += 1
            time.sleep(max(0.0, interval - (time.time() - start)))


if __name__ == "__main__":
    main()
