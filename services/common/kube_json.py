"""Reading Kubernetes objects as the API server sent them (JSON), not as client models.

kubernetes_asyncio's models refuse `None` for every field the OpenAPI schema calls
required, but a live API server does send null for some of them: a CSINode's
`spec.drivers` is null while kubelet replaces a driver, and reading it through
`StorageV1Api.read_csi_node` then fails with `ValueError: Invalid value for drivers`.
`get_object` asks the same ApiClient (same host, credentials and TLS) for the raw JSON
instead, so such a read cannot fail on the shape of the answer. API errors stay
`ApiException`, as with the generated calls.

Only the ApiClient instance is needed here; this module does not import kubernetes_asyncio
(the controller loads it lazily).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

Obj = dict[str, Any]


def csinode_path(node_name: str) -> str:
    """The API path of a node's CSINode (named after the node)."""
    return f"/apis/storage.k8s.io/v1/csinodes/{quote(node_name, safe='')}"


async def get_object(api: Any, path: str) -> Obj:
    """GET `path` with `api` (a kubernetes_asyncio ApiClient) and return the JSON object.

    Raises ApiException for an HTTP error and ValueError when the answer is not a JSON
    object."""
    data = await api.call_api(
        path, "GET", header_params={"Accept": "application/json"},
        response_types_map={200: "object"}, auth_settings=["BearerToken"],
        _return_http_data_only=True)
    if not isinstance(data, dict):
        raise ValueError(f"GET {path}: the API server answered {type(data).__name__}, "
                         "not an object")
    return data


def csinode_drivers(csinode: Obj) -> list[Obj]:
    """The drivers a CSINode lists (JSON form): none when `spec` or `spec.drivers` is null."""
    spec = csinode.get("spec") or {}
    drivers = spec.get("drivers") if isinstance(spec, dict) else None
    return [d for d in drivers or [] if isinstance(d, dict)]
