"""Build Kubernetes, etcd and the CSI sidecars from the Go module proxy.

``go install`` refuses these modules: their go.mod files have ``replace`` directives that point
into their own repository (``./staging/...``, ``../api``, ``./client``), which a module zip does
not contain. So each component is built as a dependency of a module of our own whose go.mod is
*generated* from the component's go.mod: every local replace becomes the published module
(``k8s.io/api => k8s.io/api v0.34.4``, ``go.etcd.io/etcd/api/v3 => ... v3.6.5``), every
non-local replace is copied as it is. The generated go.mod/go.sum for the default versions are
committed under ``gomod/<component>-<version>/`` and used when present.

Binaries land in ``<cache>/<component>-<version>/bin/`` and are rebuilt only when missing.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools.k8s.config import GOMOD_DIR, Versions, cache_root, read_versions_file, versions

MODULE_PREFIX = "heketi-csi.invalid/devtools/k8s"


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    # main modules to require, module path -> version
    modules: dict[str, str]
    # binary name -> Go package
    binaries: dict[str, str]
    # local replace target version, given the replaced module path (None: keep as is)
    local_replace: Callable[[str], str | None]
    # extra -ldflags, computed when building (the Kubernetes ones need the module's commit)
    ldflags: Callable[[], list[str]] = field(default=lambda: [])
    # binaries that are their package's test binary (`go test -c`), e.g. e2e.test
    test_binaries: frozenset[str] = frozenset()
    # built only when named (`build kubernetes-e2e`), never by a plain `build` or `up`
    on_demand: bool = False
    # the committed go.mod was written by hand (the module has none to generate it from)
    handwritten_gomod: bool = False

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def dir(self) -> Path:
        return cache_root() / self.key

    @property
    def bin_dir(self) -> Path:
        return self.dir / "bin"

    def built(self) -> bool:
        return all((self.bin_dir / b).is_file() for b in self.binaries)


def log(msg: str) -> None:
    print(f"[k8s-build] {msg}", flush=True)


GO_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "go.sh"


@functools.cache
def go_binary() -> str:
    """The ``go`` that builds: tools/go.sh finds one at least as new as our go.mod files ask
    (the machine's, or a toolchain it takes from the Go module proxy once) and prints its path.
    Asked only when something is actually built, so cached builds need no Go at all."""
    proc = subprocess.run(
        ["bash", str(GO_SCRIPT)], check=False, stdout=subprocess.PIPE, text=True
    )
    path = proc.stdout.strip()
    if proc.returncode != 0 or not path:
        raise RuntimeError(f"no Go toolchain to build with: {GO_SCRIPT} exited {proc.returncode}")
    return path


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(go_binary()).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def _go(args: Sequence[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [go_binary(), *args], cwd=cwd, env=_go_env(), check=False, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def module_download(path: str, version: str) -> dict[str, str]:
    """``go mod download -json``: Dir, GoMod, Info (paths into the module cache)..."""
    out: dict[str, str] = json.loads(_go(["mod", "download", "-json", f"{path}@{version}"]))
    if out.get("Error"):
        raise RuntimeError(f"{path}@{version}: {out['Error']}")
    return out


def module_info(path: str, version: str) -> dict[str, object]:
    dl = module_download(path, version)
    info: dict[str, object] = json.loads(Path(dl["Info"]).read_text())
    info["GoModFile"] = dl["GoMod"]
    info["Dir"] = dl.get("Dir", "")
    return info


def _parse_gomod(gomod_file: str) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(_go(["mod", "edit", "-json", gomod_file]))
    return parsed


def generate_gomod(comp: Component, dest: Path) -> None:
    """Write go.mod + tools.go for ``comp`` into ``dest`` and run ``go mod tidy``."""
    dest.mkdir(parents=True, exist_ok=True)
    go_version = "1.21"
    replaces: dict[str, str] = {}
    godebug: dict[str, str] = {}
    for mod, ver in comp.modules.items():
        info = module_info(mod, ver)
        gm = _parse_gomod(str(info["GoModFile"]))
        gv = str(gm.get("Go") or "1.21")
        if _vtuple(gv) > _vtuple(go_version):
            go_version = gv
        for gd in gm.get("Godebug") or []:  # type: ignore[attr-defined]
            godebug[gd["Key"]] = gd["Value"]
        for rep in gm.get("Replace") or []:  # type: ignore[attr-defined]
            old, new = rep["Old"], rep["New"]
            old_path = old["Path"]
            if old_path in comp.modules:
                continue
            lhs = old_path + (f" {old['Version']}" if old.get("Version") else "")
            if new["Path"].startswith((".", "/")):
                if "FORBIDDEN" in new["Path"]:
                    continue  # a guard against importing that module, not a real target
                target = comp.local_replace(old_path)
                if target is None:
                    continue
                replaces[lhs] = f"{old_path} {target}"
            else:
                replaces[lhs] = f"{new['Path']} {new.get('Version', '')}".strip()
    lines = [
        "// Generated by devtools/k8s/build.py: builds upstream binaries from the module proxy.",
        f"module {MODULE_PREFIX}/{comp.name}",
        "",
        f"go {go_version}",
        "",
    ]
    for k, v in sorted(godebug.items()):
        lines.append(f"godebug {k}={v}")
    if godebug:
        lines.append("")
    lines.append("require (")
    lines += [f"\t{m} {v}" for m, v in comp.modules.items()]
    lines += [")", "", "replace ("]
    lines += [f"\t{k} => {v}" for k, v in sorted(replaces.items())]
    lines += [")", ""]
    (dest / "go.mod").write_text("\n".join(lines))
    imports = "\n".join(f'\t_ "{p}"' for p in comp.binaries.values())
    (dest / "tools.go").write_text(
        "//go:build tools\n\n"
        "// Package tools pins the upstream commands this module builds.\n"
        f"package tools\n\nimport (\n{imports}\n)\n"
    )
    (dest / "go.sum").touch()
    log(f"{comp.key}: go mod tidy ({len(replaces)} replace directives)")
    _go(["mod", "tidy"], cwd=dest)
    for name in comp.test_binaries:
        # tidy leaves out what a dependency's tests import; listing them records those too
        _go(["list", "-e", "-test", "-deps", comp.binaries[name]], cwd=dest)


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def prepare_module(comp: Component, save: bool = False) -> Path:
    src = cache_root() / "src" / comp.key
    committed = GOMOD_DIR / comp.key
    if comp.handwritten_gomod and not (committed / "go.mod").is_file():
        raise RuntimeError(f"{comp.key}: no go.mod in {committed}; this component's go.mod is "
                           "written by hand from the release's glide.lock, not generated")
    if (committed / "go.mod").is_file() and (not save or comp.handwritten_gomod):
        src.mkdir(parents=True, exist_ok=True)
        for f in ("go.mod", "go.sum", "tools.go"):
            shutil.copyfile(committed / f, src / f)
        return src
    generate_gomod(comp, src)
    if save:
        committed.mkdir(parents=True, exist_ok=True)
        for f in ("go.mod", "go.sum", "tools.go"):
            shutil.copyfile(src / f, committed / f)
    return src


class _Ticker:
    """Print elapsed time every ``every`` seconds while a long step runs."""

    def __init__(self, what: str, every: float = 60.0) -> None:
        self.what, self.every = what, every
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            log(f"  ... {self.what}: {time.monotonic() - self.start:.0f}s")

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


def build_component(comp: Component, save_gomod: bool = False) -> dict[str, float]:
    """Build every missing binary of ``comp``; returns seconds per binary built."""
    timings: dict[str, float] = {}
    if comp.built() and not save_gomod:
        log(f"{comp.key}: cached in {comp.bin_dir}")
        return timings
    t0 = time.monotonic()
    src = prepare_module(comp, save=save_gomod)
    timings["go.mod"] = time.monotonic() - t0
    comp.bin_dir.mkdir(parents=True, exist_ok=True)
    ldflags = " ".join(["-s", "-w", *comp.ldflags()])
    for binary, pkg in comp.binaries.items():
        out = comp.bin_dir / binary
        if out.is_file():
            continue
        tmp = out.with_name(f".{binary}.tmp")
        log(f"{comp.key}: building {binary} ({pkg})")
        go_cmd = ["test", "-c"] if binary in comp.test_binaries else ["build"]
        with _Ticker(binary) as tick:
            proc = subprocess.run(
                [go_binary(), *go_cmd, "-trimpath", "-ldflags", ldflags, "-o", str(tmp), pkg],
                cwd=src,
                env=_go_env(),
                check=False,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"building {binary} failed (exit {proc.returncode})")
        tmp.rename(out)
        timings[binary] = tick.elapsed
        log(f"{comp.key}: {binary} built in {tick.elapsed:.0f}s")
    return timings


def components(v: Versions | None = None) -> list[Component]:
    v = v or versions()
    k8s_info_cache: dict[str, dict[str, object]] = {}

    def k8s_ldflags() -> list[str]:
        if "k" not in k8s_info_cache:
            k8s_info_cache["k"] = module_info("k8s.io/kubernetes", v.kubernetes)
        info = k8s_info_cache["k"]
        origin = info.get("Origin")
        commit = origin.get("Hash", "") if isinstance(origin, dict) else ""
        major, minor = v.kubernetes.lstrip("v").split(".")[:2]
        vals = {
            "gitVersion": v.kubernetes,
            "gitMajor": major,
            "gitMinor": minor,
            "gitCommit": commit or "unknown",
            "gitTreeState": "clean",
            "buildDate": str(info.get("Time", "1970-01-01T00:00:00Z")),
        }
        return [
            f"-X {pkg}.{k}={val}"
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for k, val in vals.items()
        ]

    def same(version: str) -> Callable[[str], str | None]:
        return lambda _path: version

    k8s = Component(
        name="kubernetes",
        version=v.kubernetes,
        modules={"k8s.io/kubernetes": v.kubernetes},
        binaries={
            b: f"k8s.io/kubernetes/cmd/{b}"
            for b in (
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubelet",
                "kubectl",
            )
        },
        local_replace=lambda p: v.staging_version if p.startswith("k8s.io/") else None,
        ldflags=k8s_ldflags,
    )
    return [
        Component(
            name="etcd",
            version=v.etcd,
            modules={"go.etcd.io/etcd/server/v3": v.etcd, "go.etcd.io/etcd/etcdctl/v3": v.etcd},
            binaries={"etcd": "go.etcd.io/etcd/server/v3", "etcdctl": "go.etcd.io/etcd/etcdctl/v3"},
            local_replace=same(v.etcd),
        ),
        k8s,
        _sidecar("external-provisioner", "v6", v.provisioner, ["csi-provisioner"]),
        _sidecar("external-attacher", "v4", v.attacher, ["csi-attacher"]),
        _sidecar(
            "external-snapshotter",
            "v8",
            v.snapshotter,
            ["csi-snapshotter", "snapshot-controller"],
            local=lambda p: v.snapshotter_client if "external-snapshotter/client" in p else None,
        ),
        _sidecar("external-resizer", "v2", v.resizer, ["csi-resizer"]),
        # the upstream storage suite (docs/conformance.md) and the ginkgo CLI that runs it in
        # parallel, from the same module graph: the CLI is the version e2e.test links
        Component(
            name="kubernetes-e2e",
            version=v.kubernetes,
            modules=k8s.modules,
            binaries={
                "e2e.test": "k8s.io/kubernetes/test/e2e",
                "ginkgo": "github.com/onsi/ginkgo/v2/ginkgo",
            },
            local_replace=k8s.local_replace,
            ldflags=k8s_ldflags,
            test_binaries=frozenset({"e2e.test"}),
            on_demand=True,
        ),
        _helm(v.helm),
        _heketi(v.heketi),
        # the container registry the cluster pulls the driver image from (registry.py)
        Component(
            name="distribution",
            version=v.distribution,
            modules={"github.com/distribution/distribution/v3": v.distribution},
            binaries={"registry": "github.com/distribution/distribution/v3/cmd/registry"},
            local_replace=lambda _p: None,
            ldflags=lambda: [
                f"-X github.com/distribution/distribution/v3/version.version={v.distribution}",
            ],
        ),
    ]


def _heketi(version: str) -> Component:
    """Heketi and heketi-cli (devtools/heketi_real runs them with the mock executor).

    The module has no go.mod: gomod/heketi-<version>/go.mod is written by hand and pins, with
    a replace each, the commits of the release's glide.lock (as tags or pseudo-versions the
    proxy serves); without them version selection would lift prometheus, x/crypto and x/sys.
    """
    mod = "github.com/heketi/heketi"
    return Component(
        name="heketi",
        version=version,
        modules={mod: f"{version}+incompatible"},
        binaries={"heketi": mod, "heketi-cli": f"{mod}/client/cli/go"},
        local_replace=lambda _p: None,
        # both are package main: the linker ignores the -X whose variable a binary lacks
        ldflags=lambda: [f"-X main.HEKETI_VERSION={version}",
                         f"-X main.HEKETI_CLI_VERSION={version}"],
        handwritten_gomod=True,
    )


def _helm(version: str) -> Component:
    """helm, with the ldflags of its Makefile (version; default Kubernetes from client-go)."""
    mod = "helm.sh/helm/v3"

    def ldflags() -> list[str]:
        gm = _parse_gomod(str(module_info(mod, version)["GoModFile"]))
        client_go = next(r["Version"] for r in gm["Require"] if r["Path"] == "k8s.io/client-go")  # type: ignore[attr-defined]
        minor = client_go.lstrip("v").split(".")[1]
        flags = [f"-X {mod}/internal/version.version={version}"]
        flags += [f"-X {mod}/internal/version.gitTreeState=clean"]
        for pkg in ("pkg/lint/rules", "pkg/chartutil"):
            flags += [f"-X {mod}/{pkg}.k8sVersionMajor=1"]
            flags += [f"-X {mod}/{pkg}.k8sVersionMinor={minor}"]
        return flags

    return Component(
        name="helm",
        version=version,
        modules={mod: version},
        binaries={"helm": f"{mod}/cmd/helm"},
        local_replace=lambda _p: None,
        ldflags=ldflags,
    )


def _sidecar(
    repo: str,
    major: str,
    version: str,
    cmds: list[str],
    local: Callable[[str], str | None] | None = None,
) -> Component:
    mod = f"github.com/kubernetes-csi/{repo}/{major}"
    return Component(
        name=repo,
        version=version,
        modules={mod: version},
        binaries={c: f"{mod}/cmd/{c}" for c in cmds},
        local_replace=local or (lambda _p: None),
        ldflags=lambda: [f"-X main.version={version}"],
    )


def component(name: str) -> Component:
    for c in components():
        if c.name == name:
            return c
    raise KeyError(name)


def binary(name: str) -> Path:
    """Path of a cached binary (kubelet, etcd, csi-provisioner, ...)."""
    for c in components():
        if name in c.binaries:
            return c.bin_dir / name
    raise KeyError(name)


def snapshot_crds_dir() -> Path:
    """The VolumeSnapshot CRDs of the external-snapshotter client module (cached copy)."""
    v = versions()
    dest = cache_root() / f"snapshot-crds-{v.snapshotter_client}"
    if dest.is_dir() and any(dest.glob("*.yaml")):
        return dest
    dl = module_download(
        "github.com/kubernetes-csi/external-snapshotter/client/v8", v.snapshotter_client
    )
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in sorted((Path(dl["Dir"]) / "config" / "crd").glob("*.yaml")):
        if f.name != "kustomization.yaml":
            shutil.copyfile(f, tmp / f.name)
    tmp.rename(dest)
    return dest


def chart_validation_sources() -> None:
    """Module sources the chart's tests validate against (tests/unit/test_chart.py): the
    OpenAPI of the oldest and newest supported Kubernetes, the ServiceMonitor CRD."""
    env = read_versions_file()
    for version in (env["SUPPORTED_KUBERNETES_OLDEST"], env["SUPPORTED_KUBERNETES_NEWEST"]):
        module_download("k8s.io/kubernetes", version)
    module_download("github.com/prometheus-operator/prometheus-operator",
                    env["PROMETHEUS_OPERATOR"])


def build_all(only: Sequence[str] = (), save_gomod: bool = False) -> dict[str, dict[str, float]]:
    """Build every missing component (one at a time; a lock keeps concurrent runs apart)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another build runs; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_all(only, save_gomod)


def _build_all(only: Sequence[str], save_gomod: bool) -> dict[str, dict[str, float]]:
    usage = shutil.disk_usage("/")
    log(f"disk: {usage.free / 2**30:.1f} GiB free on / (the Go build cache peaks at ~8.5 GB)")
    if usage.free < 12 * 2**30:
        log("WARNING: less than 12 GiB free; the build may run out of disk")
    all_t: dict[str, dict[str, float]] = {}
    t0 = time.monotonic()
    for comp in components():
        if (only and comp.name not in only) or (not only and comp.on_demand):
            continue
        c0 = time.monotonic()
        all_t[comp.key] = build_component(comp, save_gomod=save_gomod)
        if all_t[comp.key]:
            log(f"{comp.key}: done in {time.monotonic() - c0:.0f}s")
    snapshot_crds_dir()
    if not only or "helm" in only:
        chart_validation_sources()
    log(f"all components ready in {time.monotonic() - t0:.0f}s (cache {cache_root()})")
    return all_t


if __name__ == "__main__":
    build_all(sys.argv[1:])
