"""`python -m devtools.heketi_real up|down|status`: a real Heketi (mock executor) by hand.

`up` starts it in the background (config, BoltDB, log and the key files in --state-dir),
loads a topology of --nodes nodes with --devices devices each through heketi-cli, waits until
Heketi reports all of it, and prints the URL and how to use it. `down` ends the process and
removes the directory. The keys are random and written to files, never printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from devtools.heketi_real.server import RealHeketi, RealHeketiConfig, RealHeketiError, binaries

DEFAULT_STATE_DIR = Path("/run/heketi-csi-heketi-real")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devtools.heketi_real",
                                description="a real Heketi with its mock executor")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start it and load a topology")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--devices", type=int, default=3, help="devices per node")
    up.add_argument("--device-size-gib", type=int, default=1024)
    up.add_argument("--max-inflight", type=int, default=8,
                    help="running operations beyond which Heketi answers 429")
    up.add_argument("--port", type=int, default=0, help="0 picks a free port")
    sub.add_parser("down", help="stop it and remove its directory")
    sub.add_parser("status", help="say whether it runs, and where")
    return p


def _running_pid(state: Path) -> int | None:
    """The pid in the state directory if that process is our heketi, else None."""
    try:
        pid = int((state / "pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (OSError, ValueError):
        return None
    heketi, _cli = binaries()
    return pid if cmdline == str(heketi).encode() else None


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def up(args: argparse.Namespace) -> int:
    state: Path = args.state_dir
    if _running_pid(state) is not None:
        print(f"a real Heketi already runs from {state}: `down` first", file=sys.stderr)
        return 1
    shutil.rmtree(state, ignore_errors=True)
    cfg = replace(RealHeketiConfig(), nodes=args.nodes, devices_per_node=args.devices,
                  device_size_gib=args.device_size_gib, max_inflight=args.max_inflight,
                  state_dir=state, port=args.port, detached=True)
    heketi = RealHeketi(cfg)
    print(f"starting Heketi with the mock executor: {cfg.nodes} nodes x {cfg.devices_per_node} "
          f"devices of {cfg.device_size_gib} GiB, state in {state}", flush=True)
    try:
        heketi.start()
    except RealHeketiError as exc:
        shutil.rmtree(state, ignore_errors=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    assert heketi.proc is not None
    (state / "pid").write_text(str(heketi.proc.pid))
    (state / "url").write_text(heketi.url)
    _write_secret(state / "admin.key", heketi.admin_key)
    _write_secret(state / "user.key", heketi.user_key)
    print(f"""ready in {heketi.startup_seconds:.1f}s: {heketi.url} (pid {heketi.proc.pid})
  keys:   {state}/admin.key (admin), {state}/user.key (user)
  log:    {heketi.log_path}
  cli:    HEKETI_CLI_SERVER={heketi.url} HEKETI_CLI_USER=admin \\
          HEKETI_CLI_KEY="$(cat {state}/admin.key)" heketi-cli topology info
  tests:  HEKETI_TEST_URL={heketi.url} HEKETI_TEST_ADMIN_KEY="$(cat {state}/admin.key)" \\
          HEKETI_TEST_USER_KEY="$(cat {state}/user.key)" .venv/bin/python -m pytest ...
  stop:   python -m devtools.heketi_real down""")
    return 0


def down(args: argparse.Namespace) -> int:
    state: Path = args.state_dir
    pid = _running_pid(state)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        print(f"stopped the real Heketi (pid {pid})")
    existed = state.exists()
    shutil.rmtree(state, ignore_errors=True)
    if existed:
        print(f"removed {state}")
    if pid is None and not existed:
        print("no real Heketi was up")
    return 0


def status(args: argparse.Namespace) -> int:
    state: Path = args.state_dir
    pid = _running_pid(state)
    if pid is None:
        print("down")
        return 1
    print(f"up: {(state / 'url').read_text()} (pid {pid}, state in {state})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"up": up, "down": down, "status": status}[args.cmd](args)
    except (RealHeketiError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
