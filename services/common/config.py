"""Command-line flags with environment-variable fallbacks, and endpoint parsing."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.errors import InvalidArgument
from services.common.logging import check_log_format, check_log_level

DEFAULT_DRIVER_NAME = "glusterfs.heketi.csi.io"


def add_flag(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    env: str,
    help: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    required: bool = False,
) -> None:
    """Add `name` to `parser`; when absent on the command line its value comes from `env`.

    argparse converts a string default with `type`, so values from the environment are
    checked exactly like values from the command line.
    """
    env_value = os.environ.get(env)
    value = env_value if env_value not in (None, "") else default
    shown = f" (env {env}" + (f"; default {default}" if default not in (None, "") else "") + ")"
    parser.add_argument(
        name,
        default=value,
        type=type,
        required=required and value is None,
        help=help + shown,
        metavar=env,
    )


def _checked(check: Callable[[str], str]) -> Callable[[str], str]:
    """`check` as an argparse type: its ValueError becomes argparse's usage error."""
    def convert(value: str) -> str:
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = check.__name__
    return convert


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "--log-level", env="LOG_LEVEL", default="info",
             type=_checked(check_log_level), help="log level: debug, info, warning or error")
    add_flag(parser, "--log-format", env="LOG_FORMAT", default="auto",
             type=_checked(check_log_format),
             help="log format: json, text (readable lines; console is the same), or auto "
                  "(text on a terminal, else json)")


def add_common_flags(parser: argparse.ArgumentParser, *, default_endpoint: str) -> None:
    """Flags every CSI process (controller, node) takes."""
    add_flag(parser, "--endpoint", env="CSI_ENDPOINT", default=default_endpoint,
             help="unix socket to serve CSI on, as unix:///path/csi.sock")
    add_flag(parser, "--driver-name", env="CSI_DRIVER_NAME", default=DEFAULT_DRIVER_NAME,
             help="CSI driver name reported by GetPluginInfo")
    add_flag(parser, "--metrics-port", env="METRICS_PORT", default="0", type=int,
             help="TCP port for Prometheus /metrics on all addresses; 0 turns it off")
    add_flag(parser, "--grace-period", env="GRACE_PERIOD", default="10", type=float,
             help="seconds in-flight calls may take to finish after SIGTERM")
    add_logging_flags(parser)


def unix_socket_path(endpoint: str) -> Path:
    """Return the filesystem path of a `unix:///abs/path` (or bare absolute path) endpoint."""
    if endpoint.startswith("unix://"):
        raw = endpoint[len("unix://"):]
    elif endpoint.startswith("/"):
        raw = endpoint
    else:
        raise InvalidArgument(
            f"endpoint {endpoint!r} is not a unix socket; use unix:///absolute/path.sock"
        )
    if not raw.startswith("/"):
        raise InvalidArgument(f"endpoint {endpoint!r} must name an absolute path")
    return Path(raw)


def read_secret_file(path: str | None) -> str | None:
    """Read a key from a mounted Secret file (trailing newline dropped); None when unset."""
    if not path:
        return None
    return Path(path).read_text(encoding="utf-8").strip()
