"""Hypothesis strategies for the values a hostile or unlucky caller puts in CSI requests.

Every strategy yields `(value, tag)`: `tag` is None for an ordinary value and otherwise names
what is hostile about it ("huge", "symlink-target->outside", "secret-marker", ...), so a
failure can say which field carried what. The `World` says what exists (real volume ids, the
kubelet root and the planted symlinks, the honeypot URL), so that many requests are valid
apart from one or two fields and reach the code behind the validation.

Paths never point outside the cluster's base directory except relative ones, which carry a
`fuzz-rel-` token the oracle looks for: a bug can at worst act on the sandbox ("outside")
the oracle watches, never on the machine's own directories.
"""

from __future__ import annotations

import base64
import functools
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

Tagged = tuple[Any, str | None]
Strategy = st.SearchStrategy[Tagged]
HEX = "0123456789abcdef"
MIB = 1 << 20
GIB = 1 << 30
HUGE_SIZES = (20_000, 100_000, MIB)
RELATIVE_ROOTS = ("fuzz-rel-a", "fuzz-rel-b")
SPECIAL = ("\x00", "\n", "\r\n", "\t", " ", "%s%n%x", "{}", "${HOME}", "$(id)", "`id`", ";",
           "|", "&&", "'", '"', "\\", "../", "..", ".", "/", "//", ",", "=", ":", "@", "*",
           "\u202e", "\ufeff", "\U0001f4a9", "é", "e\u0301", "\uff46\uff55\uff4c\uff4c",
           "\x7f", "\x1b[31m")


@dataclass
class World:
    """What exists in the cluster under test; the harness fills it and keeps it current."""

    kubelet_root: Path
    sandbox: Path  # outside the kubelet root: nothing may appear here
    node_id: str
    sim_url: str
    honeypot_url: str  # nothing may ever connect here
    marker: str  # every credential the fuzz sends contains it
    hostname: str
    staging_pool: list[str] = field(default_factory=list)
    target_pool: list[str] = field(default_factory=list)
    planted: list[tuple[str, str]] = field(default_factory=list)  # (path, tag)
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> volume_context
    protected: set[str] = field(default_factory=set)  # fixture ids: never deleted
    fixtures: list[str] = field(default_factory=list)  # the first is staged and published
    # Contexts of real gluster volumes (the simulator keeps its volumes in memory).
    mountable: list[dict[str, str]] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    cluster_ids: list[str] = field(default_factory=list)
    volume_names: list[str] = field(default_factory=lambda: [f"fuzz-vol-{i}" for i in range(4)])
    snapshot_names: list[str] = field(
        default_factory=lambda: [f"fuzz-snap-{i}" for i in range(3)])
    cache: dict[str, Any] = field(default_factory=dict)


def tag(strategy: st.SearchStrategy[Any], label: str | None) -> Strategy:
    return strategy.map(lambda value: (value, label))


def fixed(value: Any, label: str | None = None) -> Strategy:
    return st.just((value, label))


def weighted(*options: tuple[int, Strategy]) -> Strategy:
    """One of `options`, each chosen with probability weight / total."""
    table: list[Strategy] = []
    for weight, strategy in options:
        table += [strategy] * weight
    return st.integers(0, len(table) - 1).flatmap(table.__getitem__)


def cached(world: World, key: str, factory: Callable[[], Strategy]) -> Strategy:
    """Strategies that depend only on fixed parts of the world are built once."""
    if key not in world.cache:
        world.cache[key] = factory()
    strategy: Strategy = world.cache[key]
    return strategy


# Lists that change during a run (the ids that exist) are indexed through this fixed range:
# hypothesis insists that what is drawn (not what it maps to) never depends on outside state.
INDEX = st.integers(0, 255)


def pick(draw: st.DrawFn, items: Sequence[Any], fallback: Any) -> Any:
    """An element of a list that may change between examples (or `fallback` if empty)."""
    i = draw(INDEX)
    return items[i % len(items)] if items else fallback


def picked(items: Callable[[], Sequence[Any]], fallback: Any) -> Strategy:
    """A strategy over a list that may change between examples."""
    return INDEX.map(lambda i: (lambda xs: (xs[i % len(xs)], None) if xs
                                else (fallback, "empty"))(items()))


def pool(values: list[Any], label: str | None = None) -> Strategy:
    return tag(st.sampled_from(values), label) if values else fixed("", "empty")


# --- text --------------------------------------------------------------------------------------


def huge_text(unit: str | None = None) -> st.SearchStrategy[str]:
    """20 kB to 1 MB, made by repetition so that drawing it costs nothing."""
    units = st.just(unit) if unit else st.sampled_from(["a", "é", "\U0001f4a9", "ab/", "0", "%"])
    return st.tuples(units, st.sampled_from(HUGE_SIZES)).map(
        lambda t: t[0] * max(1, t[1] // len(t[0].encode())))


@functools.cache
def text(short: bool = False) -> Strategy:
    """Any string a field might get: plain, unicode, special characters, empty, huge."""
    ascii_ = st.text(alphabet=string.ascii_letters + string.digits + "-_.", max_size=16)
    return weighted(
        (30, tag(ascii_, None)),
        (15, tag(st.text(max_size=16), "unicode")),
        (10, tag(st.lists(st.sampled_from(SPECIAL), min_size=1, max_size=4).map("".join),
                 "special-chars")),
        (5, fixed("", "empty")),
        (0 if short else 1, tag(huge_text(), "huge")),
        (0 if short else 2, tag(st.integers(300, 5000).map(lambda n: "x" * n), "long")),
    )


def marker_text(world: World) -> Strategy:
    """A credential: always carries the marker, sometimes huge."""
    m = world.marker
    return cached(world, "marker", lambda: weighted(
        (60, tag(st.sampled_from([m, f"k-{m}", f"{m}\n", f"{m}:{m}", f"{m} é"]),
                 "secret-marker")),
        (1, tag(huge_text(unit=m), "secret-marker-huge"))))


def hex_id(length: int = 32) -> st.SearchStrategy[str]:
    return st.text(alphabet=HEX, min_size=length, max_size=length)


# --- ids ---------------------------------------------------------------------------------------
# The functions below take hypothesis's `draw` (they run inside the request's one composite):
# building a composite strategy per field would cost hypothesis a source inspection each time.


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def adhoc_backends(world: World) -> list[tuple[str, str]]:
    """(backend token, tag) of ids naming a Heketi URL instead of a configured backend."""
    urls = [(world.sim_url, "adhoc-configured-url"),
            (world.honeypot_url, "adhoc-unconfigured-url"),
            ("http://127.0.0.1:1", "adhoc-closed-port"),
            ("file:///etc/passwd", "adhoc-non-http-url"),
            ("ftp://127.0.0.1/x", "adhoc-non-http-url"),
            ("unix:///run/x.sock", "adhoc-non-http-url"),
            ("http://[::1", "adhoc-bad-url"),
            ("javascript:alert(1)", "adhoc-non-http-url")]
    tokens = [("@" + _b64(u.encode()), t) for u, t in urls]
    return [*tokens, ("@!!!!", "adhoc-bad-base64"), ("@" + _b64(b"\xff\xfe"), "adhoc-not-utf8"),
            ("@", "adhoc-empty")]


def object_id(draw: st.DrawFn, world: World, kind: str, known: list[str]) -> Tagged:
    """A volume (`hv1`) or snapshot (`hs1`) id: a real one, or nearly one, or anything."""
    choice = draw(st.integers(0, 99))
    if choice < 45:
        h = draw(hex_id())
        return pick(draw, known, f"{kind}:default:{h}"), None if known else "unknown-id"
    if choice < 57:
        token, label = draw(st.sampled_from(adhoc_backends(world)))
        return f"{kind}:{token}:{draw(hex_id())}", label
    if choice < 67:
        value: Tagged = draw(text())
        return value
    other = "hs1" if kind == "hv1" else "hv1"
    backend = next((k.split(":")[1] for k in known if k.count(":") == 2), "default")
    h = draw(hex_id())
    real = pick(draw, known, f"{kind}:{backend}:{h}")
    malformed: Tagged = draw(st.sampled_from([
        (f"{kind}:{backend}:{h}", "unknown-id"),
        (f"{other}:{backend}:{h}", "wrong-kind-id"),
        (f"{kind}:{backend}:{'g' * 32}", "non-hex-id"),
        (f"{kind}:{backend}:{h[:31]}", "short-id"),
        (f"{kind}:{backend}:{h.upper()}", "upper-hex-id"),
        (f"{kind}:{backend}:{h}:x", "extra-part-id"),
        (f"{kind}::{h}", "empty-backend-id"),
        (f"{kind}:{'b' * 41}:{h}", "long-backend-id"),
        (f"{kind}:Other:{h}", "bad-backend-id"),
        (f"{kind}:other:{h}", "unconfigured-backend-id"),
        (kind, "truncated-id"), (":::", "colons-id"),
        (real + "x", "mangled-real-id"), (real.upper(), "mangled-real-id"),
    ]))
    return malformed


# --- paths -------------------------------------------------------------------------------------


def _path_table(world: World, kind: str) -> Strategy:
    root, sandbox = str(world.kubelet_root), str(world.sandbox)
    rel = str(world.sandbox.relative_to(world.kubelet_root.parent))
    good = world.staging_pool if kind == "staging" else world.target_pool
    other = world.target_pool if kind == "staging" else world.staging_pool
    lexical = [f"{root}/pods/../../{rel}/lex-{kind}/mount", f"{root}/../{rel}/lex-{kind}",
               f"{root}/./pods/dot/mount", f"{root}//pods/double/mount",
               f"{root}/pods/trailing/mount/"]
    direct = [f"{sandbox}/direct-{kind}/mount", sandbox, f"{sandbox}/existing"]
    malformed = ["", root, root + "/", f"{RELATIVE_ROOTS[0]}/{kind}/mount", ".", "..",
                 f"{root}/pods/nul\x00/mount", f"{root}/pods/new\nline/mount",
                 f"{root}/pods/{'n' * 300}/mount", f"{root}/plugins", f"{root}/pods"]
    unsafe = [f"{root}/pods/sp ace/mount", f"{root}/pods/$(touch {sandbox}/pwned)/mount",
              f"{root}/pods/*/mount", f"{root}/pods/é/mount", f"{root}/pods/a,b/mount",
              f"{root}/pods/`touch {sandbox}/pwned2`/mount"]
    junk = text(short=True).map(lambda t: (f"{root}/pods/{t[0]}", f"junk-component:{t[1]}"))
    deep = st.sampled_from(HUGE_SIZES).map(
        lambda n: (f"{root}/pods/" + ("d" * 200 + "/") * (n // 201), "huge-deep"))
    wide = st.sampled_from(HUGE_SIZES).map(lambda n: (f"{root}/pods/" + "c" * n,
                                                      "huge-component"))
    relative = [f"{RELATIVE_ROOTS[1]}/x", f"./{RELATIVE_ROOTS[1]}/y"]
    return weighted(
        (40, pool(good)), (6, pool(other, "other-kind-path")), (18, pool_tagged(world.planted)),
        (6, pool(lexical, "lexical-escape")), (4, pool(direct, "outside-direct")),
        (6, pool(malformed, "malformed-path")), (5, pool(unsafe, "helper-unsafe-path")),
        (6, junk), (1, deep), (1, wide), (2, pool(relative, "relative-path")))


def attack_path(world: World, kind: str) -> Strategy:
    """Only the paths that try to lead the node outside the kubelet root."""
    def table() -> Strategy:
        root, sandbox = str(world.kubelet_root), str(world.sandbox)
        rel = str(world.sandbox.relative_to(world.kubelet_root.parent))
        return weighted(
            (50, pool_tagged(world.planted)),
            (20, pool([f"{root}/pods/../../{rel}/lex-{kind}/mount",
                       f"{root}/../{rel}/lex-{kind}"], "lexical-escape")),
            (10, pool([f"{sandbox}/direct-{kind}/mount", f"{sandbox}/existing"],
                      "outside-direct")),
            (10, pool([f"{root}/pods/$(touch {sandbox}/pwned)/mount",
                       f"{root}/pods/`touch {sandbox}/pwned2`/mount"], "helper-unsafe-path")),
            (10, pool([f"{RELATIVE_ROOTS[1]}/x"], "relative-path")))
    return cached(world, f"attack-{kind}", table)


def path(world: World, kind: str) -> Strategy:
    """A staging or target path: usually a good one, else hostile (symlinks planted in the
    kubelet root that lead outside, lexical escapes, malformed, huge, relative...)."""
    return cached(world, f"path-{kind}", lambda: _path_table(world, kind))


def pool_tagged(items: list[tuple[str, str]]) -> Strategy:
    return st.sampled_from(items) if items else fixed("", "empty")


# --- maps --------------------------------------------------------------------------------------


def secrets(draw: st.DrawFn, world: World) -> Tagged:
    """A secrets map: every value carries the marker."""
    count = draw(st.sampled_from([1, 2, 0, 1, 2, 3, 4] * 5 + [500]))
    keys = ["key", "user", "adminkey", "userkey", "restuserkey", "password", "token"]
    result: dict[str, str] = {}
    labels = set()
    for i in range(count):
        name = draw(st.sampled_from(keys)) if count < 10 else f"k{i}"
        value, label = draw(marker_text(world)) if i < 10 else (world.marker, None)
        result[name] = value
        labels.add(label)
    if count >= 10:
        labels.add("many-entries")
    return result, ",".join(sorted(x for x in labels if x)) or None


def _storage_class_values(world: World) -> dict[str, Strategy]:
    """Per StorageClass parameter: its values, good and bad."""
    m, sim = world.marker, world.sim_url
    host_port = sim.split("://", 1)[-1]
    ints = ["2000", "5000", "0", "-1", "2147483647", "99999999999999999999", "abc", " 7 "]
    return {
        "resturl": weighted(
            (30, fixed(sim)), (5, fixed(sim + "/")),
            (10, fixed(f"http://admin:{m}@{host_port}", "resturl-userinfo-marker")),
            (5, fixed(f"{sim}/?key={m}", "resturl-query-marker")),
            (5, fixed(f"{sim}#{m}", "resturl-fragment-marker")),
            (5, fixed("http://127.0.0.1:1", "resturl-closed-port")),
            (5, pool(["file:///etc/passwd", "ftp://127.0.0.1/", "not a url", "http://",
                      "http://[::1"], "resturl-bad")),
            (5, text())),
        "restuser": weighted((40, pool(["admin", "user"])), (10, text())),
        "restuserkey": marker_text(world),
        "restauthenabled": weighted((30, pool(["true", "false"])), (10, text())),
        "secretname": weighted((30, fixed("heketi-secret")), (10, text())),
        "secretnamespace": weighted((30, fixed("default")), (10, text())),
        "clusterid": weighted((30, picked(lambda: world.cluster_ids, "")),
                              (10, tag(hex_id(), "unknown")),
                              (10, pool(["a,b", ",", " "], "bad")), (5, text())),
        "gidmin": weighted((30, pool(ints)), (5, text())),
        "gidmax": weighted((30, pool(ints)), (5, text())),
        "volumetype": weighted(
            (30, pool(["replicate:3", "replicate:2", "replicate", "none"])),
            (10, pool(["disperse:4:2", "disperse:2:1"], "disperse")),
            (10, pool(["replicate:4", "disperse:3:1", "mirror", "replicate:x", ":", ""],
                      "bad")), (5, text())),
        "volumeoptions": weighted((30, pool(["performance.read-ahead off",
                                             "client.ssl on, server.ssl on"])), (10, text())),
        "volumenameprefix": weighted((30, pool(["fuzz", "fuzz-pre"])), (10, text())),
        "snapfactor": weighted((30, pool(["1", "1.5", "100"])),
                               (10, pool(["0", "101", "nan", "inf", "-1", "abc", "1e400"],
                                         "bad")), (5, text())),
        "customepnameprefix": text(),
        "csi.storage.k8s.io/pvc/name": text(),
        "csi.storage.k8s.io/pvc/namespace": text(),
        "csi.storage.k8s.io/pv/name": text(),
    }


def parameters(draw: st.DrawFn, world: World) -> Tagged:
    """StorageClass parameters: known keys (any case) with good and bad values, and others."""
    if "storage-class" not in world.cache:
        world.cache["storage-class"] = _storage_class_values(world)
    values: dict[str, Strategy] = world.cache["storage-class"]
    count = draw(st.sampled_from([2, 0, 1, 3, 4, 6, 0] * 5 + [300]))
    result: dict[str, str] = {}
    labels: list[str] = []
    for i in range(count):
        if count > 10:
            result[f"unknown{i}"] = "x"
            continue
        if draw(st.integers(0, 9)) == 0:
            key, label = draw(text())
            value, vlabel = draw(text())
            labels.append(f"unknown-key({label},{vlabel})")
        else:
            key = draw(st.sampled_from(sorted(values)))
            value, vlabel = draw(values[key])
            if vlabel:
                labels.append(f"{key}={vlabel}")
            if draw(st.integers(0, 9)) == 0:
                key = key.upper()
        result[key] = value
    if count > 10:
        labels.append("many-entries")
    return result, ";".join(labels) or None


def all_contexts(world: World) -> list[dict[str, str]]:
    return [*world.mountable, *world.volumes.values()]


def _context_values(world: World) -> dict[str, Strategy]:
    local = [world.hostname, "127.0.0.1", "localhost", f"127.0.0.1,{world.hostname}"]

    def names() -> list[str]:
        return sorted({c.get("volume", "") for c in all_contexts(world)} - {""})

    hosts = weighted((40, pool(local)),
                     (10, pool(["", "bad host", "h;touch x", "-o", "127.0.0.1:24007", ",",
                                "x" * 300], "bad-hosts")), (5, text()))
    return {
        "volume": weighted((40, picked(names, "vol_none")),
                           (10, pool(["vol_nonexistent_fuzz", "../../etc", "", "a b", "-o"],
                                     "bad-volume")), (5, text())),
        "hosts": hosts,
        "backupVolfileServers": hosts,
        "gid": weighted((30, pool(["2001", "0"])),
                        (10, pool(["-1", "abc", "99999999999", " 1"], "bad-gid")), (5, text())),
    }


def context(draw: st.DrawFn, world: World) -> Tagged:
    """A volume or publish context: a real volume's, maybe with a key changed, or anything."""
    choice = draw(st.integers(0, 99))
    if choice < 60:
        result = dict(pick(draw, all_contexts(world), {}))
        labels = []
        changes = draw(st.sampled_from([0, 0, 1, 1, 2]))
        values = _context_values(world) if changes else {}
        for _ in range(changes):
            key = draw(st.sampled_from(sorted(values)))
            value, label = draw(values[key])
            result[key] = value
            labels.append(f"{key}={label or 'other'}")
        return result, ";".join(labels) or None
    if choice < 75:
        return {}, "empty-context"
    result = {}
    labels = []
    for _ in range(draw(st.integers(1, 3))):
        key, klabel = draw(text())
        value, vlabel = draw(text())
        result[key] = value
        labels.append(f"random({klabel},{vlabel})")
    return result, ";".join(labels)


def mount_flag(world: World) -> Strategy:
    sandbox = str(world.sandbox)
    return cached(world, "mount-flag", lambda: weighted(
        (30, pool(["ro", "rw", "noatime", "nodiratime", "relatime", "acl", "log-level=DEBUG",
                   "backup-volfile-servers=127.0.0.1"])),
        (10, pool(["suid", "dev", "exec", "nosuid", "nodev",
                   "context=system_u:object_r:container_file_t:s0"], "privileged-flag")),
        (10, pool([f"log-file={sandbox}/flag.log", f"log-file={sandbox}/newdir/f.log",
                   "volfile-id=other", "ro,rw", "rw,dev,suid", f"$(touch {sandbox}/pwned3)",
                   "a b", "", ",", "=", "-o", "x-mount.mkdir"], "hostile-flag")),
        (8, text())))


def many(draw: st.DrawFn, strategy: Strategy, label: str) -> tuple[list[Any], str | None]:
    """A list of 0-4 values, or rarely a thousand."""
    count = draw(st.sampled_from([1, 0, 2, 1, 3, 4, 0] * 5 + [1000]))
    if count == 1000:
        value, _ = draw(strategy)
        return [value] * count, "1000-entries"
    drawn = [draw(strategy) for _ in range(count)]
    labels = sorted({t for _, t in drawn if t})
    return [v for v, _ in drawn], ",".join(labels) or None


def byte_count() -> Strategy:
    return weighted(
        (40, pool([GIB, 2 * GIB, 5 * GIB, 1])),
        (10, pool([0, -1, -GIB, GIB + 1, 100 * GIB, 1 << 40, 1 << 62, (1 << 63) - 1,
                   -(1 << 63)], "edge-bytes")),
        (5, tag(st.integers(-(1 << 63), (1 << 63) - 1), "random-bytes")),
    )
