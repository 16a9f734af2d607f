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

# Subcommand -> module with `add_arguments(parser)` and `async run(args) -> int`.
_PROCESSES = {
    "controller": "services.controller.main",
    "node": "services.node.main",
    "registrar": "services.registrar.main",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heketi-csi",
        description="CSI driver for GlusterFS volumes provisioned through Heketi.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in _PROCESSES.items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or name).strip().splitlines()[0]
        child = sub.add_parser(name, help=summary, description=summary)
        module.add_arguments(child)
    sub.add_parser("version", help="print the version and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"heketi-csi {package_version()}")
        return 0
    try:
        configure_logging(args.log_level, args.log_format)
    except ValueError as exc:
        print(f"heketi-csi: error: {exc}", file=sys.stderr)
        return 2
    module = importlib.import_module(_PROCESSES[args.command])
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
