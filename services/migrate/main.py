"""`heketi-csi migrate plan|apply|rollback`: in-tree glusterfs PVs to CSI PVs of this driver.

Give migrate the controller's Heketi settings (`--heketi-url` or `--backends-file`): the
volume ids it writes name the controller's backend, exactly as CreateVolume would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64

from services.common.config import DEFAULT_DRIVER_NAME, add_flag, add_logging_flags
from services.controller.backends import BackendConfig, backends_from_args
from services.migrate.apply import Applier, Timeouts, dry_run
from services.migrate.heketi import HeketiAccess
from services.migrate.kube import Kube, KubeError, connect
from services.migrate.plan import Planner, Unit
from services.migrate.report import FAILED, USAGE, Outcome, Progress, print_plan
from services.migrate.rollback import RollBacker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    plan = sub.add_parser("plan", help="show what would be done; change nothing")
    apply = sub.add_parser("apply", help="move the chosen claims to CSI PVs")
    rollback = sub.add_parser("rollback", help="move claims back to their in-tree PVs")
    for child in (plan, apply, rollback):
        _add_common(child)
        child.add_argument("--pvc", action="append", default=[], metavar="NAMESPACE/NAME",
                           help="only this claim (repeatable); default: all"
                           + (" (rollback needs at least one)" if child is rollback else ""))
    plan.add_argument("--output", "-o", choices=("text", "json"), default="text")
    for child in (apply, rollback):
        child.add_argument("--pod-wait", type=float, default=300.0, metavar="SECONDS",
                           help="how long to wait for pods to stop using a claim (default 300)")
        child.add_argument("--step-timeout", type=float, default=120.0, metavar="SECONDS",
                           help="how long one deletion or binding may take (default 120)")
        child.add_argument("--parallel", type=int, default=4,
                           help="claims moved at once (default 4)")
    apply.add_argument("--dry-run", action="store_true",
                       help="say what would be done and have the API server validate the new "
                            "PVs; change nothing")
    rollback.add_argument("--force", action="store_true",
                          help="roll back a claim even if it was used or resized since")


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_logging_flags(parser)
    add_flag(parser, "--kubeconfig", env="KUBECONFIG",
             help="kubeconfig file (default: the usual search, then the in-cluster config)")
    add_flag(parser, "--context", env="KUBE_CONTEXT", help="kubeconfig context")
    add_flag(parser, "--driver-name", env="CSI_DRIVER_NAME", default=DEFAULT_DRIVER_NAME,
             help="the CSI driver name of the new PVs")
    add_flag(parser, "--heketi-url", env="HEKETI_URL",
             help="the controller's --heketi-url (the backend named 'default')")
    add_flag(parser, "--heketi-connect-url", env="HEKETI_CONNECT_URL",
             help="where to reach that Heketi from here, when not at --heketi-url "
                  "(e.g. through kubectl port-forward)")
    add_flag(parser, "--heketi-user", env="HEKETI_USER", default="admin",
             help="Heketi user (JWT issuer)")
    add_flag(parser, "--heketi-key-file", env="HEKETI_KEY_FILE",
             help="file holding the Heketi admin key; else env HEKETI_KEY; else --heketi-secret")
    add_flag(parser, "--heketi-secret", env="HEKETI_SECRET", default="heketi-csi/heketi-admin",
             help="namespace/name of the Secret (data key 'key') holding the Heketi key, "
                  "read when no key is given otherwise")
    add_flag(parser, "--backends-file", env="HEKETI_BACKENDS_FILE",
             help="the controller's --backends-file, for more than one Heketi")
    add_flag(parser, "--heketi-ca-file", env="HEKETI_CA_FILE",
             help="CA bundle to verify Heketi's TLS certificate")
    parser.add_argument("--class-map", action="append", default=[], metavar="OLD=NEW",
                        help="move claims of StorageClass OLD to StorageClass NEW (of this "
                             "driver); default: the class of the same name")


def _class_map(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise ValueError(f"--class-map {pair!r} is not OLD=NEW")
        mapping[old] = new
    return mapping


async def _with_key(configured: list[BackendConfig], kube: Kube,
                    secret: str | None) -> list[BackendConfig]:
    """The 'default' backend with the key from the cluster's Secret when none was given."""
    if not secret or not any(c.name == "default" and c.key is None for c in configured):
        return configured
    namespace, _, secret_name = secret.partition("/")
    found = await kube.secret(namespace, secret_name)
    data = (found or {}).get("data") or {}
    if "key" not in data:
        return configured
    key = base64.b64decode(data["key"]).decode()
    return [BackendConfig(c.name, c.url, c.user, key, c.ca_file)
            if c.name == "default" and c.key is None else c for c in configured]


def _select(units: list[Unit], wanted: list[str]) -> tuple[list[Unit], list[str]]:
    if not wanted:
        return units, []
    by_key = {u.key: u for u in units}
    return [by_key[w] for w in wanted if w in by_key], [w for w in wanted if w not in by_key]


async def run(args: argparse.Namespace) -> int:
    try:
        class_map = _class_map(args.class_map)
        configured = backends_from_args(args)
    except Exception as exc:
        print(f"heketi-csi migrate: {exc}")
        return USAGE
    if not configured:
        print("heketi-csi migrate: give the controller's --heketi-url or --backends-file")
        return USAGE
    if args.action == "rollback" and not args.pvc:
        print("heketi-csi migrate rollback: name the claims to roll back with --pvc NS/NAME")
        return USAGE
    try:
        api = await connect(args.kubeconfig, args.context)
    except Exception as exc:
        print(f"heketi-csi migrate: no Kubernetes API: {exc}")
        return FAILED
    async with api:
        kube = Kube(api)
        heketi = None
        try:
            heketi = HeketiAccess(await _with_key(configured, kube, args.heketi_secret), kube,
                                  args.heketi_connect_url)
            planner = Planner(kube, heketi, args.driver_name, class_map)
            units, unknown = _select(await planner.units(), args.pvc)
            if unknown:
                print("heketi-csi migrate: no in-tree glusterfs PV or migrated claim for "
                      + ", ".join(unknown))
                return USAGE
            await planner.examine_all(units)
            if args.action == "plan":
                return print_plan(units, args.output)
            return await _act(args, kube, planner, units)
        except KubeError as exc:
            print(f"heketi-csi migrate: {exc}")
            return FAILED
        finally:
            if heketi is not None:
                await heketi.close()


async def _act(args: argparse.Namespace, kube: Kube, planner: Planner,
               units: list[Unit]) -> int:
    verb = "rollback" if args.action == "rollback" else \
        "apply (dry run)" if args.dry_run else "apply"
    progress = Progress(units, verb)
    timeouts = Timeouts(pods=args.pod_wait, step=args.step_timeout)
    limit = asyncio.Semaphore(max(1, args.parallel))

    async def one(unit: Unit) -> Outcome:
        async with limit:
            if args.action == "rollback":
                return await RollBacker(kube, planner, progress, timeouts).run(unit, args.force)
            if args.dry_run:
                return await dry_run(kube, planner, progress, unit)
            return await Applier(kube, planner, progress, timeouts).run(unit)

    await asyncio.gather(*(one(u) for u in units))
    return progress.summary()
