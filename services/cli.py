"""The `heketi-csi` command: one entry point for the controller, node and registrar."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

from services.common.errors import DriverError
from services.common.logging import configure_logging, get_logger
from services.common.server import StartupError
from services.common.version import package_version

# Subcommand -> (module with `add_arguments(parser)` and `async run(args) -> int`, summary).
_PROCESSES = {
    "controller": ("services.controller.main",
                   "CSI controller: volumes, snapshots and clones through Heketi"),
    "node": ("services.node.main", "CSI node plugin: GlusterFS FUSE mounts on this node"),
    "registrar": ("services.registrar.main",
                  "register the node plugin with kubelet and serve /healthz"),
    "migrate": ("services.migrate.main",
                "take over in-tree kubernetes.io/glusterfs PVs (plan, apply, rollback)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported, to keep start-up short."""
    parser = argparse.ArgumentParser(
        prog="heketi-csi",
        description="CSI driver for GlusterFS volumes provisioned through Heketi.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, summary) in _PROCESSES.items():
        child = sub.add_parser(name, help=summary, description=summary)
        if name == command:
            importlib.import_module(module_name).add_arguments(child)
    sub.add_parser("version", help="print the version and exit")
    return parser


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command(argv)).parse_args(argv)
    if args.command == "version":
        print(f"heketi-csi {package_version()}")
        return 0
    try:
        configure_logging(args.log_level, args.log_format)
    except ValueError as exc:
        print(f"heketi-csi: error: {exc}", file=sys.stderr)
        return 2
    module = importlib.import_module(_PROCESSES[args.command][0])
    log = get_logger("cli", process=args.command)
    try:
        code: int = asyncio.run(module.run(args))
    except (StartupError, DriverError) as exc:
        log.error("cannot start", error=str(exc))
        print(f"heketi-csi {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
