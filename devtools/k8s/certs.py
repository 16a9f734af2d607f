"""Certificates and kubeconfigs of the local cluster (openssl, EC P-256, one CA)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from devtools.k8s.config import APISERVER_PORT, BRIDGE_IP, NODE_NAME, SERVICE_IP, STATE_DIR

PKI = STATE_DIR / "pki"
DAYS = "3650"


def _ssl(*args: str, cwd: Path = PKI) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key(name: str) -> None:
    _ssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key"
    )


def _cert(name: str, subject: str, usage: str, sans: list[str] | None = None) -> None:
    _key(name)
    _ssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr")
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    (PKI / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _ssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        DAYS,
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
    )
    (PKI / f"{name}.csr").unlink()
    (PKI / f"{name}.ext").unlink()


# name -> (subject, extendedKeyUsage, subjectAltNames)
CERTS: dict[str, tuple[str, str, list[str]]] = {
    "apiserver": (
        "/CN=kube-apiserver",
        "serverAuth",
        [
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            "DNS:localhost",
            "IP:127.0.0.1",
            f"IP:{SERVICE_IP}",
            f"IP:{BRIDGE_IP}",
        ],
    ),
    "apiserver-kubelet-client": (
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "clientAuth",
        [],
    ),
    "admin": ("/O=system:masters/CN=kubernetes-admin", "clientAuth", []),
    "controller-manager": ("/CN=system:kube-controller-manager", "clientAuth", []),
    "scheduler": ("/CN=system:kube-scheduler", "clientAuth", []),
    "kubelet-client": (f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth", []),
    "kubelet-serving": (
        f"/CN={NODE_NAME}",
        "serverAuth",
        [f"DNS:{NODE_NAME}", "DNS:localhost", "IP:127.0.0.1", f"IP:{BRIDGE_IP}"],
    ),
}

KUBECONFIGS = {
    "admin": "admin",
    "controller-manager": "controller-manager",
    "scheduler": "scheduler",
    "kubelet": "kubelet-client",
}


def server_url() -> str:
    return f"https://{BRIDGE_IP}:{APISERVER_PORT}"


def write_kubeconfig(path: Path, cert: str, user: str) -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "hcsi",
                "cluster": {"server": server_url(), "certificate-authority": str(PKI / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(PKI / f"{cert}.crt"),
                    "client-key": str(PKI / f"{cert}.key"),
                },
            }
        ],
        "contexts": [{"name": "hcsi", "context": {"cluster": "hcsi", "user": user}}],
        "current-context": "hcsi",
    }
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    path.chmod(0o600)
    return path


def kubeconfig_path(name: str) -> Path:
    return STATE_DIR / f"{name}.kubeconfig"


def ensure_pki() -> bool:
    """Create the CA, every certificate, the service-account keys and kubeconfigs if absent.

    Returns True when something was created."""
    PKI.mkdir(parents=True, exist_ok=True)
    PKI.chmod(0o700)
    created = False
    if not (PKI / "ca.crt").is_file():
        _key("ca")
        _ssl(
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=heketi-csi-local-ca",
            "-days",
            DAYS,
            "-sha256",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out",
            "ca.crt",
        )
        created = True
    for name, (subject, usage, sans) in CERTS.items():
        if not (PKI / f"{name}.crt").is_file():
            _cert(name, subject, usage, sans)
            created = True
    if not (PKI / "sa.key").is_file():
        _key("sa")
        _ssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        created = True
    for kc, cert in KUBECONFIGS.items():
        user = "admin" if kc == "admin" else kc
        write_kubeconfig(kubeconfig_path(kc), cert, user)
    return created
