"""Prometheus metrics of the registrar (besides the shared RPC metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

REGISTERED = Gauge(
    "heketi_csi_registrar_registered",
    "1 when kubelet's last registration verdict was success, else 0",
)
REGISTRATIONS = Counter(
    "heketi_csi_registrar_registrations_total",
    "registration verdicts kubelet reported, by outcome", ["outcome"],
)
SOCKET_RECREATED = Counter(
    "heketi_csi_registrar_socket_recreated_total",
    "times the registration socket was found missing and created again",
)
