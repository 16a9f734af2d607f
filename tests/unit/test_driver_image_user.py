"""`make image` / `make push` (devtools/k8s/driver_image.py) against a stand-in `docker` on
PATH that records its arguments, and the pieces of the local cluster's registry
(devtools/k8s/registry.py) that need no cluster: its config, containerd's hosts.toml, and
the access-log reading the e2e test relies on. (The real registry, push and pull are proved
by tests/e2e/test_install_paths.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devtools.k8s import driver_image, registry

REPO = Path(__file__).resolve().parents[2]
VERSION = driver_image.package_version()

FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$DOCKER_CALLS"
case "$1" in
  version) [ -n "$DOCKER_DOWN" ] && exit 1; echo 27.0.0 ;;
  image) [ -n "$DOCKER_EMPTY" ] && exit 1; echo 123456789 ;;
esac
exit 0
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER)
    script.chmod(0o755)
    calls = tmp_path / "calls"
    calls.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("DOCKER_CALLS", str(calls))
    return calls


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devtools.k8s.driver_image", *args],
                          cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=60, check=False)


def test_make_image_builds_the_runtime_target_tagged_with_the_version(fake_docker: Path) -> None:
    result = run_cli("image")
    assert result.returncode == 0, result.stderr
    build = [line for line in fake_docker.read_text().splitlines() if line.startswith("build")]
    assert len(build) == 1
    args = build[0].split()
    assert args[args.index("--target") + 1] == "runtime"
    assert args[args.index("-t") + 1] == f"heketi-csi:{VERSION}"
    assert f"VERSION={VERSION}" in args
    assert not any(a.startswith("BASE_IMAGE=") for a in args), "the Dockerfile's own base"
    assert args[-1] == str(REPO) and args[args.index("-f") + 1] == str(REPO / "Dockerfile")
    assert "118 MiB" in result.stdout  # 123456789 bytes, the size docker reported


def test_make_image_passes_a_base_image(fake_docker: Path) -> None:
    assert run_cli("image", "--base-image", "debian:bookworm").returncode == 0
    assert "BASE_IMAGE=debian:bookworm" in fake_docker.read_text()


def test_make_push_tags_and_pushes_to_the_registry(fake_docker: Path) -> None:
    result = run_cli("push", "--registry", "registry.example.com:5000/storage/")
    assert result.returncode == 0, result.stderr
    target = f"registry.example.com:5000/storage/heketi-csi:{VERSION}"
    calls = fake_docker.read_text().splitlines()
    assert f"tag heketi-csi:{VERSION} {target}" in calls
    assert f"push {target}" in calls


@pytest.mark.parametrize(("registry_arg", "message"), [
    ("", "REGISTRY is missing"),
    ("https://registry.example.com", "without a scheme"),
    ("Registry.example.com/Storage", "not a registry name"),
    ("registry.example.com/a b", "not a registry name"),
    ("registry.example.com/x:tag", "not a registry name"),
])
def test_make_push_refuses_a_bad_registry_and_runs_nothing(
        fake_docker: Path, registry_arg: str, message: str) -> None:
    result = run_cli("push", "--registry", registry_arg)
    assert result.returncode == 2
    assert message in result.stderr
    assert fake_docker.read_text() == ""


def test_make_push_without_the_built_image_says_so(fake_docker: Path) -> None:
    result = run_cli("push", "--registry", "registry.example.com", env={"DOCKER_EMPTY": "1"})
    assert result.returncode == 2
    assert "`make image` first" in result.stderr
    assert "push" not in fake_docker.read_text().split()


def test_without_docker_or_its_daemon_the_error_says_which(
        fake_docker: Path, tmp_path: Path) -> None:
    result = run_cli("image", env={"DOCKER_DOWN": "1"})
    assert result.returncode == 2 and "no Docker daemon answers" in result.stderr
    result = run_cli("image", env={"PATH": str(tmp_path / "empty")})
    assert result.returncode == 2 and "docker is not installed" in result.stderr


def test_make_push_without_registry_fails_before_building() -> None:
    result = subprocess.run(["make", "-s", "push", "REGISTRY="], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "REGISTRY is missing" in result.stderr


def test_registry_config_serves_plain_http_on_loopback_from_the_state_dir() -> None:
    config = yaml.safe_load(registry.config_text())
    assert config["http"]["addr"] == registry.REGISTRY == "127.0.0.1:23850"
    assert "tls" not in config["http"]
    root = Path(config["storage"]["filesystem"]["rootdirectory"])
    assert root.is_relative_to(registry.STATE_DIR)
    assert config["log"]["accesslog"]["disabled"] is False
    assert yaml.safe_load(registry.config_text())["http"]["secret"] != config["http"]["secret"]


def test_containerd_reaches_the_registry_over_http() -> None:
    from devtools.k8s.cluster import containerd_config

    hosts = registry.hosts_toml()
    assert 'server = "http://127.0.0.1:23850"' in hosts
    assert '[host."http://127.0.0.1:23850"]' in hosts and '"pull"' in hosts
    assert f'config_path = "{registry.HOSTS_DIR}"' in containerd_config()


def test_access_log_requests_are_read_by_path(tmp_path: Path) -> None:
    log = tmp_path / "registry.log"
    log.write_text("\n".join([
        'time="x" level=info msg="response completed" http.request.uri=/v2/a/manifests/t',
        '127.0.0.1 - - [06/Dec/2026:22:33:47 +0000] "HEAD /v2/a/manifests/t HTTP/1.1" 200 '
        '1234 "" "containerd/1.6.20"',
        '127.0.0.1 - - [06/Dec/2026:22:33:48 +0000] "GET /v2/b/manifests/t HTTP/1.1" 404 '
        '95 "" "docker/20.10"',
    ]))
    assert registry.requests_for("/v2/a/manifests/t", log) == [
        ("HEAD", 200, "containerd/1.6.20")]
    assert registry.requests_for("/v2/none", log) == []
    assert registry.requests_for("/v2/a", tmp_path / "missing.log") == []


def test_the_local_overlay_names_the_registry_images() -> None:
    text = (REPO / "k8s/local/kustomization.yaml").read_text()
    images = {i["newName"] for i in yaml.safe_load(text)["images"]}
    assert images == set(driver_image.REGISTRY_IMAGES.values()) == {
        "127.0.0.1:23850/heketi-csi", "127.0.0.1:23850/heketi-csi-dev"}
