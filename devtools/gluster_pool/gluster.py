"""The gluster CLI inside one server's namespaces (`gluster --mode=script [--xml] ...`)."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

from devtools.gluster_pool.processes import ALL_NS, PoolError, nsenter, run
from devtools.glusterd import split_xml

CLI_TIMEOUT = 120.0
BUSY = ("Another transaction is in progress", "Locking failed")
BUSY_RETRY_SECONDS = 30.0


class GlusterError(PoolError):
    """gluster refused; `gluster_message` is its own text."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.gluster_message = message



async def cli_xml(pid: int, *args: str, seconds: float = CLI_TIMEOUT) -> ET.Element:
    """Run `gluster --xml ARGS` in the server whose PID 1 is `pid`; the parsed answer.

    Retried while glusterd is busy with another transaction."""
    what = "gluster " + " ".join(args)
    deadline = time.monotonic() + BUSY_RETRY_SECONDS
    while True:
        result = await run([*nsenter(pid, *ALL_NS), "gluster", "--mode=script", "--xml", *args],
                           what, seconds, check=False)
        text, rest = split_xml(result.output)
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            raise GlusterError(what, f"exit {result.returncode}: "
                                     f"{result.output[-1000:] or 'no output'}") from None
        if root.findtext("opRet") == "0":
            return root
        message = root.findtext("opErrstr") or rest or "failed without a message"
        if not any(b in message for b in BUSY) or time.monotonic() > deadline:
            raise GlusterError(what, message)
        await asyncio.sleep(0.5)


async def cli_text(pid: int, *args: str, seconds: float = CLI_TIMEOUT) -> tuple[int, str]:
    """Run `gluster ARGS` (plain text) in a server; (exit code, output)."""
    result = await run([*nsenter(pid, *ALL_NS), "gluster", "--mode=script", *args],
                       "gluster " + " ".join(args), seconds, check=False)
    return result.returncode, result.output
