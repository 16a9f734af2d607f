"""The Heketi backends the controller talks to, their clients, credentials and indexes.

A backend is either configured (flags or --backends-file, referenced by name) or ad hoc: a
`resturl` StorageClass parameter naming a Heketi the controller was not configured with, whose
credentials then come from the request's secrets. Volume ids name the backend, so later calls
(delete, expand, snapshot) reach the same Heketi.

The controller contacts no URL but those its configuration allows: the configured backends',
and ad-hoc URLs only when listed in --adhoc-heketi-urls (none by default). A volume id naming
any other URL is NOT_FOUND, so a crafted id cannot make the controller send requests (and a
caller's key) anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from services.common.config import read_secret_file
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    Unavailable,
)
from services.common.logging import get_logger
from services.common.server import StartupError
from services.controller.heketi import HeketiBusy, HeketiClient, HeketiNotFound, VolumeInfo
from services.controller.heketi.urls import heketi_url
from services.controller.ids import (
    backend_token_for_url,
    url_from_backend_token,
    validate_backend_name,
)
from services.controller.index import VolumeIndex
from services.controller.params import VolumeParams

_log = get_logger("backends")

SECRET_KEY = "key"  # data key of the Heketi key in the Secret (as the in-tree plugin used)
SECRET_USER = "user"
DEFAULT_USER = "admin"


@dataclass(frozen=True)
class BackendConfig:
    name: str
    url: str
    user: str = DEFAULT_USER
    key: str | None = field(default=None, repr=False)
    ca_file: str | None = None


@dataclass
class ClientSettings:
    max_inflight: int = 8
    request_timeout: float = 30.0
    operation_timeout: float = 1800.0
    index_concurrency: int = 16


def load_backends_file(path: str) -> list[BackendConfig]:
    """Backends from a YAML list of {name, url, user, key_file, ca_file}."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"cannot read backends file {path}: {exc}") from None
    items = data.get("backends") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise InvalidArgument(f"backends file {path} must hold a non-empty list of backends")
    result = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "name" not in item or "url" not in item:
            raise InvalidArgument(f"backends file {path}: entry {i} needs 'name' and 'url'")
        unknown = set(item) - {"name", "url", "user", "key_file", "ca_file"}
        if unknown:
            raise InvalidArgument(
                f"backends file {path}: entry {i} has unknown keys {sorted(unknown)}")
        result.append(BackendConfig(
            name=validate_backend_name(str(item["name"])),
            url=heketi_url(str(item["url"]), f"backends file {path}: entry {i}: url"),
            user=str(item.get("user", DEFAULT_USER)),
            key=read_secret_file(item.get("key_file")), ca_file=item.get("ca_file"),
        ))
    names = [b.name for b in result]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"backends file {path}: backend names must be unique")
    return result


@dataclass
class Backend:
    """One Heketi, reached with one set of credentials."""

    token: str
    url: str
    client: HeketiClient
    index: VolumeIndex
    # GIDs given to creates still running; one set per token, shared by its Backend objects.
    reserved_gids: set[int] = field(default_factory=set)
    # The Heketi key of these credentials: it also keys adopted volumes' marks (ids.py).
    key: str | None = field(default=None, repr=False)

    async def reread(self, heketi_id: str) -> VolumeInfo | None:
        """The volume as Heketi describes it now (one GET), with the index brought in step:
        recorded, or forgotten (and None) once Heketi no longer knows it.

        Heketi answers `GET /volumes/{id}` with 404 both for a volume that does not exist and
        for one an operation in progress holds (the source of a clone), but lists the latter
        in `GET /volumes`: so a 404 costs one list request, and a volume still listed is
        `HeketiBusy` (ABORTED: retry later), kept in the index, never taken for deleted.
        """
        try:
            info = await self.client.volume_info(heketi_id)
        except HeketiNotFound:
            if heketi_id in await self.client.list_volume_ids():
                raise HeketiBusy(
                    f"Heketi backend {self.token!r}: volume {heketi_id} exists, but an "
                    "operation in progress in Heketi holds it (a clone of it, or a snapshot "
                    "taken from it), so Heketi will not describe it now; retry later") from None
            self.index.remove(heketi_id)
            return None
        self.index.add(info)
        return info

    @contextlib.contextmanager
    def gid_for_create(self, gid_range: tuple[int, int] | None) -> Iterator[int | None]:
        """A GID of `gid_range` that no volume of this backend has and no running create
        holds, reserved for the block (None when there is no range).

        Choosing and reserving run with no await between them, so creates on the event loop
        are serialised without a lock; the reservation lasts while the create runs, after
        which its volume (and GID) is in the index.
        """
        if gid_range is None:
            yield None
            return
        low, high = gid_range
        taken = self.index.gids_in_use() | self.reserved_gids
        gid = next((g for g in range(low, high + 1) if g not in taken), None)
        if gid is None:
            raise OutOfRange(f"no free GID left in gidMin..gidMax {low}..{high}")
        self.reserved_gids.add(gid)
        try:
            yield gid
        finally:
            self.reserved_gids.discard(gid)


def adhoc_urls(text: str | None) -> frozenset[str]:
    """The normalised URLs of a comma-separated --adhoc-heketi-urls value."""
    items = [u.strip() for u in (text or "").split(",") if u.strip()]
    return frozenset(heketi_url(u, "--adhoc-heketi-urls: an entry") for u in items)


class BackendRegistry:
    def __init__(self, configured: list[BackendConfig], settings: ClientSettings,
                 adhoc: Iterable[str] = ()) -> None:
        self._configured = {
            b.name: replace(b, url=heketi_url(b.url, f"the URL of Heketi backend {b.name!r}"))
            for b in configured}
        self._adhoc = frozenset(adhoc)
        self._settings = settings
        self._clients: dict[tuple[str, str, str], HeketiClient] = {}
        self._indexes: dict[str, VolumeIndex] = {}
        self._index_locks: dict[str, asyncio.Lock] = {}
        self._reserved_gids: dict[str, set[int]] = {}

    @property
    def configured(self) -> list[BackendConfig]:
        return list(self._configured.values())

    # --- choosing a backend -------------------------------------------------------------
    def token_for_create(self, params: VolumeParams) -> str:
        if params.resturl:
            for cfg in self._configured.values():
                if cfg.url == params.resturl:
                    return cfg.name
            if params.resturl not in self._adhoc:
                raise InvalidArgument(
                    f"parameter resturl {params.resturl!r} names a Heketi this controller is "
                    "not configured for; configure it (--heketi-url, --backends-file) or allow "
                    "it as an ad-hoc backend with --adhoc-heketi-urls")
            return backend_token_for_url(params.resturl)
        if len(self._configured) == 1:
            return next(iter(self._configured))
        if "default" in self._configured:
            return "default"
        if not self._configured:
            raise InvalidArgument(
                "no Heketi backend: set the resturl StorageClass parameter, or start the "
                "controller with --heketi-url or --backends-file")
        raise InvalidArgument(
            "several Heketi backends are configured; set resturl in the StorageClass to "
            "choose one of: " + ", ".join(b.url for b in self._configured.values()))

    async def backend(
        self, token: str, secrets: Mapping[str, str], params: VolumeParams | None = None
    ) -> Backend:
        """The backend for a token, with its index built (waits for the first build)."""
        cfg = self._configured.get(token)
        url = cfg.url if cfg else url_from_backend_token(token)
        if url is None:
            raise NotFound(f"Heketi backend {token!r} is not configured on this controller")
        if cfg is None and heketi_url(url, "the Heketi URL") not in self._adhoc:
            raise NotFound(f"the Heketi at {url!r} is neither configured on this controller "
                           "nor allowed by --adhoc-heketi-urls")
        user, key = self._credentials(cfg, secrets, params)
        client = self._client(token, url, user, key, cfg.ca_file if cfg else None)
        index = await self._index(token, client)
        return Backend(token=token, url=url, client=client, index=index,
                       reserved_gids=self._reserved_gids.setdefault(token, set()), key=key)

    def _credentials(
        self, cfg: BackendConfig | None, secrets: Mapping[str, str], params: VolumeParams | None
    ) -> tuple[str, str | None]:
        if secrets.get(SECRET_KEY):
            return secrets.get(SECRET_USER) or (params and params.restuser) or DEFAULT_USER, \
                secrets[SECRET_KEY]
        if params is not None and params.restuserkey:
            return params.restuser or DEFAULT_USER, params.restuserkey
        if cfg is not None:
            return cfg.user, cfg.key
        return (params.restuser if params and params.restuser else DEFAULT_USER), None

    def _client(self, token: str, url: str, user: str, key: str | None,
                ca_file: str | None) -> HeketiClient:
        digest = hashlib.sha256((key or "").encode()).hexdigest()
        cache_key = (token, user, digest)
        client = self._clients.get(cache_key)
        if client is None:
            client = HeketiClient(
                url, user, key, ca_file=ca_file, max_inflight=self._settings.max_inflight,
                request_timeout=self._settings.request_timeout,
                operation_timeout=self._settings.operation_timeout, name=token,
            )
            self._clients[cache_key] = client
        return client

    async def _index(self, token: str, client: HeketiClient) -> VolumeIndex:
        index = self._indexes.get(token)
        if index is not None and index.ready:
            return index
        lock = self._index_locks.setdefault(token, asyncio.Lock())
        async with lock:
            index = self._indexes.get(token)
            if index is None or not index.ready:
                index = VolumeIndex(token)
                try:
                    await index.build(client, self._settings.index_concurrency)
                except NotFound as exc:  # e.g. a resturl whose path is not Heketi's API
                    raise FailedPrecondition(f"cannot read volumes of Heketi {token}: {exc}") \
                        from None
                self._indexes[token] = index
        return index

    # --- start-up and health ---------------------------------------------------------------
    async def warm_up(self, retry_interval: float = 5.0) -> None:
        """Build the configured backends' indexes, retrying while Heketi is unreachable."""
        for cfg in self._configured.values():
            while True:
                try:
                    await self.backend(cfg.name, {})
                    break
                except Unavailable as exc:
                    _log.warning("Heketi not reachable; retrying", backend=cfg.name,
                                 error=str(exc), retry_in_s=retry_interval)
                    await asyncio.sleep(retry_interval)
                except Exception as exc:
                    _log.error("cannot read Heketi volumes; retrying", backend=cfg.name,
                               error=str(exc), retry_in_s=retry_interval)
                    await asyncio.sleep(retry_interval)

    async def resync_forever(self, interval: float) -> None:
        """Keep configured backends' indexes in step with changes made outside the driver."""
        while True:
            await asyncio.sleep(interval)
            for name, index in list(self._indexes.items()):
                cfg = self._configured.get(name)
                if cfg is None or not index.ready:
                    continue
                try:
                    client = self._client(name, cfg.url, *self._credentials(cfg, {}, None),
                                          cfg.ca_file)
                    added, removed = await index.resync(client,
                                                        self._settings.index_concurrency)
                except Exception as exc:  # logged; the next round retries
                    _log.warning("index resync failed", backend=name, error=str(exc))
                    continue
                if added or removed:
                    _log.info("index resynced", backend=name, added=added, removed=removed)

    def ready(self) -> bool:
        return all(
            (idx := self._indexes.get(name)) is not None and idx.ready
            for name in self._configured
        )

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()


def backends_from_args(args: argparse.Namespace) -> list[BackendConfig]:
    """The backends the command line names: `--backends-file` and `--heketi-url` (shared by
    the controller and `heketi-csi migrate`)."""
    configured: list[BackendConfig] = []
    if args.backends_file:
        configured.extend(load_backends_file(args.backends_file))
    if args.heketi_url:
        if any(b.name == "default" for b in configured):
            raise StartupError("--heketi-url and a backend named 'default' in --backends-file "
                               "cannot both be given")
        key = read_secret_file(args.heketi_key_file) or os.environ.get("HEKETI_KEY") or None
        configured.append(BackendConfig("default", args.heketi_url.rstrip("/"),
                                        args.heketi_user, key, args.heketi_ca_file))
    return configured
