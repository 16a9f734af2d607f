"""The Heketi side of migrate: which backend a StorageClass means (exactly as the controller
decides it, so that the volume ids name the controller's backend), its key (which keys the
adoption mark), and the in-tree PV's Heketi volume as Heketi describes it now."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field

from services.common.errors import DriverError
from services.controller.backends import BackendConfig, BackendRegistry, ClientSettings
from services.controller.heketi import HeketiClient, HeketiNotFound, VolumeInfo
from services.controller.ids import (
    Kind,
    adoption_mark,
    make_ref,
    parse_owned_name,
    url_from_backend_token,
)
from services.controller.params import parse_params
from services.migrate.intree import HeketiRef
from services.migrate.journal import Obj
from services.migrate.kube import Kube

_SECRET_KEY, _SECRET_USER = "key", "user"


class Unmigratable(Exception):
    """Why a PV cannot be migrated (said to the user as is)."""


class HeketiUnreachable(Unmigratable):
    """Heketi did not answer: nothing is known about the PV's volume (an error, not a
    verdict on the PV)."""


@dataclass
class Target:
    """One Heketi as the controller names it (`token`), reached from here by `client`."""

    token: str
    client: HeketiClient
    key: str | None
    _by_name: dict[str, VolumeInfo] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def volume_id(self, heketi_id: str) -> str:
        return make_ref(Kind.VOLUME, self.token, heketi_id,
                        adoption_mark(self.key, heketi_id)).encode()

    async def by_name(self, name: str) -> VolumeInfo | None:
        """Heketi has no lookup by name: every volume is read once (bounded), then cached."""
        async with self._lock:
            if self._by_name is None:
                ids = await self.client.list_volume_ids()
                limit = asyncio.Semaphore(16)

                async def read(volume_id: str) -> VolumeInfo | None:
                    async with limit:
                        try:
                            return await self.client.volume_info(volume_id)
                        except HeketiNotFound:
                            return None

                infos = await asyncio.gather(*(read(v) for v in ids))
                self._by_name = {i.name: i for i in infos if i is not None}
        return self._by_name.get(name)


def _decode(value: str) -> str:
    return base64.b64decode(value).decode()


class HeketiAccess:
    def __init__(self, configured: list[BackendConfig], kube: Kube,
                 connect_url: str | None = None) -> None:
        self._configured = {c.name: c for c in configured}
        self._registry = BackendRegistry(configured, ClientSettings())
        self._kube = kube
        self._connect_url = connect_url
        self._targets: dict[str, Target] = {}

    async def target(self, storage_class: Obj) -> Target:
        """The backend the controller would use for this class (Unmigratable if none)."""
        raw = {str(k): str(v) for k, v in (storage_class.get("parameters") or {}).items()}
        try:
            params = parse_params(raw)
            token = self._registry.token_for_create(params)
        except DriverError as exc:
            raise Unmigratable(f"StorageClass {storage_class['metadata']['name']}: {exc}") \
                from None
        if token in self._targets:
            return self._targets[token]
        cfg = self._configured.get(token)
        if cfg is not None:
            url = self._connect_url if token == "default" and self._connect_url else cfg.url
            user, key, ca_file = cfg.user, cfg.key, cfg.ca_file
        else:
            url = url_from_backend_token(token) or ""
            user, key = await self._class_credentials(storage_class, params.restuser)
            ca_file = None
        try:
            client = HeketiClient(url, user, key, ca_file=ca_file, name=token)
        except ValueError as exc:
            raise Unmigratable(str(exc)) from None
        self._targets[token] = Target(token, client, key)
        return self._targets[token]

    async def _class_credentials(self, storage_class: Obj,
                                 restuser: str | None) -> tuple[str, str | None]:
        """For a Heketi the controller is not configured with: the key the provisioner
        secret of the class holds (what the controller gets in DeleteVolume)."""
        params = {k.lower(): v for k, v in (storage_class.get("parameters") or {}).items()}
        name = params.get("csi.storage.k8s.io/provisioner-secret-name")
        namespace = params.get("csi.storage.k8s.io/provisioner-secret-namespace")
        if not name or not namespace or "${" in name + namespace:
            raise Unmigratable(
                f"StorageClass {storage_class['metadata']['name']} names a Heketi "
                f"({params.get('resturl')}) that is not configured here and no fixed "
                "provisioner secret; give migrate the controller's --heketi-url or "
                "--backends-file")
        secret = await self._kube.secret(namespace, name)
        data = (secret or {}).get("data") or {}
        if _SECRET_KEY not in data:
            raise Unmigratable(f"Secret {namespace}/{name} has no data key {_SECRET_KEY!r}")
        user = _decode(data[_SECRET_USER]) if _SECRET_USER in data else restuser or "admin"
        return user, _decode(data[_SECRET_KEY])

    async def volume(self, target: Target, ref: HeketiRef) -> VolumeInfo:
        """The PV's Heketi volume now; Unmigratable when it is unknown or not in-tree."""
        try:
            if ref.volume_id:
                try:
                    info = await target.client.volume_info(ref.volume_id)
                except HeketiNotFound:
                    raise Unmigratable(f"Heketi ({target.token}) has no volume "
                                       f"{ref.volume_id}") from None
                if info.name != ref.volume_name:
                    raise Unmigratable(f"Heketi volume {ref.volume_id} is named {info.name}, "
                                       f"but the PV mounts {ref.volume_name}")
            else:
                found = await target.by_name(ref.volume_name)
                if found is None:
                    raise Unmigratable(f"Heketi ({target.token}) has no volume named "
                                       f"{ref.volume_name}")
                info = found
        except DriverError as exc:
            raise HeketiUnreachable(f"cannot read Heketi ({target.token}): {exc}") from None
        if parse_owned_name(info.name) is not None:
            raise Unmigratable(f"Heketi volume {info.name} is already a heketi-csi volume")
        if info.block:
            raise Unmigratable(f"Heketi volume {info.name} hosts block volumes")
        return info

    async def close(self) -> None:
        for target in self._targets.values():
            await target.client.close()
        await self._registry.close()
