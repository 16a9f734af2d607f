"""Registrar flags, their environment fallbacks and the checks run before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.common.server import StartupError
from services.registrar.app import registration_socket_path
from services.registrar.health import parse_http_endpoint
from services.registrar.main import add_arguments, check_arguments

HOST_SOCK = "/var/lib/kubelet/plugins/glusterfs.heketi.csi.io/csi.sock"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_follow_node_driver_registrar() -> None:
    args = parse("--kubelet-registration-path", HOST_SOCK)
    assert args.csi_address == "/csi/csi.sock"
    assert args.plugin_registration_dir == "/registration"
    assert args.http_endpoint == ""
    assert args.driver_name is None
    assert args.wait_timeout == 300.0
    assert args.socket_check_interval == 1.0
    assert args.log_level == "info"
    check_arguments(args)


def test_environment_supplies_every_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "ADDRESS": "unix:///csi/x.sock",
        "DRIVER_REG_SOCK_PATH": HOST_SOCK,
        "PLUGIN_REGISTRATION_DIR": "/var/lib/kubelet/plugins_registry",
        "HTTP_ENDPOINT": ":9809",
        "CSI_DRIVER_NAME": "glusterfs.heketi.csi.io",
        "WAIT_TIMEOUT": "12.5",
        "SOCKET_CHECK_INTERVAL": "0.5",
        "LOG_LEVEL": "debug",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = parse()
    assert (args.csi_address, args.kubelet_registration_path, args.plugin_registration_dir,
            args.http_endpoint, args.driver_name, args.wait_timeout,
            args.socket_check_interval, args.log_level) == (
        "unix:///csi/x.sock", HOST_SOCK, "/var/lib/kubelet/plugins_registry", ":9809",
        "glusterfs.heketi.csi.io", 12.5, 0.5, "debug")
    # The command line wins over the environment.
    assert parse("--wait-timeout", "3").wait_timeout == 3.0


def test_registration_path_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse()
    assert "--kubelet-registration-path" in capsys.readouterr().err


def test_help_names_the_environment_variables() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    for env in ("ADDRESS", "DRIVER_REG_SOCK_PATH", "PLUGIN_REGISTRATION_DIR", "HTTP_ENDPOINT",
                "CSI_DRIVER_NAME", "WAIT_TIMEOUT", "SOCKET_CHECK_INTERVAL", "LOG_FORMAT"):
        assert f"env {env}" in text


@pytest.mark.parametrize(("argv", "complaint"), [
    (["--csi-address", "csi.sock"], "--csi-address"),
    (["--csi-address", "tcp://1.2.3.4:5"], "--csi-address"),
    (["--kubelet-registration-path", "plugins/csi.sock"], "--kubelet-registration-path"),
    (["--plugin-registration-dir", "registration"], "--plugin-registration-dir"),
    (["--wait-timeout", "0"], "--wait-timeout"),
    (["--socket-check-interval", "-1"], "--socket-check-interval"),
    (["--http-endpoint", "9809"], "--http-endpoint"),
])
def test_bad_configuration_is_refused_with_the_flag_named(argv: list[str],
                                                           complaint: str) -> None:
    args = parse("--kubelet-registration-path", HOST_SOCK, *argv)
    with pytest.raises(InvalidArgument) as err:
        check_arguments(args)
    assert complaint in err.value.message


@pytest.mark.parametrize(("value", "expected"), [
    (":9809", (None, 9809)),
    ("127.0.0.1:9809", ("127.0.0.1", 9809)),
    ("[::1]:9809", ("::1", 9809)),
    ("localhost:1", ("localhost", 1)),
])
def test_http_endpoint_forms(value: str, expected: tuple[str | None, int]) -> None:
    assert parse_http_endpoint(value) == expected


@pytest.mark.parametrize("value", ["9809", "host:", ":0", ":65536", "h:x1", ""])
def test_bad_http_endpoints(value: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_http_endpoint(value)


def test_registration_socket_is_named_after_the_driver() -> None:
    path = registration_socket_path(Path("/registration"), "glusterfs.heketi.csi.io")
    assert str(path) == "/registration/glusterfs.heketi.csi.io-reg.sock"


@pytest.mark.parametrize("name", ["../etc/x", "a/b", ".hidden", "x-", "a" * 64, "sp ace", ""])
def test_a_driver_name_that_is_no_csi_name_never_becomes_a_path(name: str) -> None:
    with pytest.raises(StartupError):
        registration_socket_path(Path("/registration"), name)
