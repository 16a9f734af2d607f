"""Register the node plugin with kubelet (replaces node-driver-registrar) and serve /healthz."""

from __future__ import annotations

import argparse

from services.common.config import add_flag, add_logging_flags, unix_socket_path
from services.common.errors import InvalidArgument
from services.registrar.app import serve
from services.registrar.health import parse_http_endpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "--csi-address", env="ADDRESS", default="/csi/csi.sock",
             help="the node plugin's CSI socket as this container sees it "
                  "(unix:///path or /path); its GetPluginInfo names the driver")
    add_flag(parser, "--kubelet-registration-path", env="DRIVER_REG_SOCK_PATH", required=True,
             help="the node plugin's CSI socket as the host (kubelet) sees it, e.g. "
                  "/var/lib/kubelet/plugins/<driver>/csi.sock; announced to kubelet")
    add_flag(parser, "--plugin-registration-dir", env="PLUGIN_REGISTRATION_DIR",
             default="/registration",
             help="kubelet's plugins_registry directory as this container sees it; the "
                  "registration socket <dir>/<driver>-reg.sock is created there")
    add_flag(parser, "--http-endpoint", env="HTTP_ENDPOINT", default="",
             help="host:port for the HTTP server with /healthz and /metrics, e.g. :9809 "
                  "(all addresses) or 127.0.0.1:9809; empty turns it off")
    add_flag(parser, "--driver-name", env="CSI_DRIVER_NAME",
             help="expected driver name; start-up fails when the driver's GetPluginInfo "
                  "names another (default: whatever GetPluginInfo says)")
    add_flag(parser, "--wait-timeout", env="WAIT_TIMEOUT", default="300", type=float,
             help="seconds to wait for the driver socket to answer GetPluginInfo before "
                  "giving up with exit code 1")
    add_flag(parser, "--socket-check-interval", env="SOCKET_CHECK_INTERVAL", default="1",
             type=float,
             help="seconds between checks that the registration socket still exists; a "
                  "missing socket (e.g. wiped by a kubelet restart) is created anew")
    add_logging_flags(parser)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse a configuration the registrar cannot work with, saying why."""
    if not args.kubelet_registration_path:
        raise InvalidArgument("--kubelet-registration-path (or DRIVER_REG_SOCK_PATH) is required")
    for flag, value in (("--csi-address", args.csi_address),
                        ("--kubelet-registration-path", args.kubelet_registration_path)):
        try:
            unix_socket_path(value)
        except InvalidArgument:
            raise InvalidArgument(
                f"{flag} {value!r} must be a unix socket: /absolute/path or unix:///absolute/path"
            ) from None
    if not args.plugin_registration_dir.startswith("/"):
        raise InvalidArgument("--plugin-registration-dir must be an absolute path")
    if args.wait_timeout <= 0:
        raise InvalidArgument("--wait-timeout must be positive")
    if args.socket_check_interval <= 0:
        raise InvalidArgument("--socket-check-interval must be positive")
    if args.http_endpoint:
        parse_http_endpoint(args.http_endpoint)


async def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    return await serve(args)
