"""The option list of a glusterfs FUSE mount, and validation of user-supplied mount flags.

Mount flags come from the volume capability (StorageClass or PV `mountOptions`). They are
passed to `mount -t glusterfs -o ...`, whose helper is a shell script that splits on commas
and whitespace. So every flag is split on commas and each part must be a known option with
a well-formed value. What a user may ask for, flag by flag (the in-tree plugin set `ro`,
`log-level`, `log-file`, `backup-volfile-servers` and `auto_unmount` itself and passed the
rest through; we keep its useful set and refuse what reaches beyond the volume):

- allowed: `ro`/`rw`, the atime flags the FUSE mount takes (`atime`, `noatime`, `diratime`,
  `norelatime`, `nostrictatime`: the glusterfs client hands the kernel `nodiratime`, `relatime`,
  `strictatime` and `[no]lazyatime` as FUSE options, which it refuses), `exec`/`noexec`,
  `nosuid`/`nodev` (no-ops: always set), `auto_unmount`, `_netdev`, gluster client switches
  (`acl`, `worm`, `resolve-gids`, ...) and tuning values (`log-level`, timeouts,
  `direct-io-mode`, `transport`, ...).
- always set by the driver, never negotiable: `nosuid` and `nodev`. A FUSE mount made by
  root honours set-uid bits and device nodes unless told otherwise, and a gluster volume
  is written by every pod that mounts it (and by anyone with access to the gluster
  servers): a set-uid binary or a device node planted there would give its user root, or
  the host's disks, in every other pod and on the node itself.
- refused, naming the flag:
  - `suid` and `dev`, for the reason above;
  - SELinux labels: `context`, `fscontext`, `defcontext`, `rootcontext` (a label the user
    picks would let a pod give a shared network volume a type that host daemons or other
    confined containers trust; gluster FUSE files are `fusefs_t` by the host's policy,
    which containers may use with the `container_use_fusefs` boolean), and `selinux`
    (labels stored on the volume, written by whoever can write to it);
  - flags that act on other mounts (bind, move, remount, propagation changes);
  - options the driver sets itself or that hand arbitrary options to the client
    (log-file, backup-volfile-servers, volfile servers/ids, fuse-mountopts, xlator-option,
    ...);
  - anything unknown, and any character outside a small safe set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument

LOG_LEVELS = frozenset({"TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NONE"})

# Kernel/VFS flags the helper passes through, plus gluster client switches without a value.
_PLAIN = frozenset(
    {
        "ro", "rw",
        "atime", "noatime", "diratime", "norelatime", "nostrictatime",
        "nodev", "exec", "noexec", "nosuid",
        "auto_unmount", "_netdev",
        "acl", "worm", "enable-ino32", "resolve-gids", "global-threading",
        "localtime-logging", "fopen-keep-cache",
    }
)

_BOOL = re.compile(r"(?i)yes|no|true|false|on|off|enable|disable")
_UINT = re.compile(r"[0-9]{1,10}")
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")

# Options with a value: option -> pattern the whole value must match.
_VALUED: dict[str, re.Pattern[str]] = {
    "log-level": re.compile(r"(?i)" + "|".join(sorted(LOG_LEVELS))),
    "attribute-timeout": _SECONDS,
    "entry-timeout": _SECONDS,
    "negative-timeout": _SECONDS,
    "gid-timeout": _SECONDS,
    "lru-limit": _UINT,
    "invalidate-limit": _UINT,
    "background-qlen": _UINT,
    "congestion-threshold": _UINT,
    "reader-thread-count": _UINT,
    "fetch-attempts": _UINT,
    "event-history": _BOOL,
    "attr-times-granularity": _UINT,
    "direct-io-mode": re.compile(r"(?i)auto|enable|disable|yes|no|true|false|on|off"),
    "use-readdirp": _BOOL,
    "kernel-writeback-cache": _BOOL,
    "auto-invalidation": _BOOL,
    "fopen-keep-cache": _BOOL,
    "fuse-flush-handle-interrupt": _BOOL,
    "transport": re.compile(r"tcp|rdma"),
    "halo-max-latency": _UINT,
    "halo-max-replicas": _UINT,
    "halo-min-replicas": _UINT,
}

# Set on every mount by the driver (see the module docstring).
ALWAYS = ("nosuid", "nodev")

# Flags a user may not ask for, with the reason the error gives.
_REFUSED = {
    "suid": "set-uid files on a shared volume would run as their owner in every pod and on "
    "the node; volumes are always mounted nosuid",
    "dev": "device nodes on a shared volume would open the node's devices; volumes are "
    "always mounted nodev",
    "selinux": "SELinux labels stored on the volume are chosen by whoever writes to it",
    **dict.fromkeys(
        ("context", "fscontext", "defcontext", "rootcontext"),
        "the driver does not let a volume choose its SELinux label (gluster FUSE files are "
        "fusefs_t; allow containers to use them with the container_use_fusefs boolean)",
    ),
}

_OTHER_MOUNTS = frozenset(
    {
        "bind", "rbind", "move", "remount",
        "shared", "rshared", "private", "rprivate",
        "slave", "rslave", "unbindable", "runbindable",
        "make-shared", "make-rshared", "make-private", "make-rprivate",
        "make-slave", "make-rslave", "make-unbindable", "make-runbindable",
    }
)

_DRIVER_OWNED = frozenset(
    {
        "log-file", "backup-volfile-servers", "backupvolfile-server", "volfile-server",
        "volfile-id", "volfile-check", "server-port", "volume-name", "volume-id",
        "subdir-mount", "fuse-mountopts", "xlator-option", "process-name", "dump-fuse",
        "aux-gfid-mount", "thin-client", "oom-score-adj", "io-engine",
        "fuse-dev-eperm-ratelimit-ns", "no-root-squash", "root-squash",
    }
)

_SAFE_PART = re.compile(r"[A-Za-z0-9_.:=+-]+")


def _check_part(part: str) -> str:
    if not _SAFE_PART.fullmatch(part):
        raise InvalidArgument(
            f"mount flag {part!r} contains characters that are not allowed "
            "(letters, digits and _.:=+- only)"
        )
    key, has_value, value = part.partition("=")
    if key in _REFUSED:
        raise InvalidArgument(f"mount flag {key!r} is refused: {_REFUSED[key]}")
    if key in _OTHER_MOUNTS or key.startswith("x-") or key.startswith("X-"):
        raise InvalidArgument(f"mount flag {key!r} is refused: it would act on other mounts")
    if key in _DRIVER_OWNED:
        raise InvalidArgument(
            f"mount flag {key!r} is refused: the driver sets it, or it passes arbitrary "
            "options to the gluster client"
        )
    if not has_value:
        if key in _PLAIN:
            return key
        if key in _VALUED:
            raise InvalidArgument(f"mount flag {key!r} needs a value ({key}=...)")
        raise InvalidArgument(f"mount flag {key!r} is not a supported glusterfs mount option")
    pattern = _VALUED.get(key)
    if pattern is None:
        if key in _PLAIN:
            raise InvalidArgument(f"mount flag {key!r} takes no value")
        raise InvalidArgument(f"mount flag {key!r} is not a supported glusterfs mount option")
    if not pattern.fullmatch(value):
        raise InvalidArgument(f"mount flag {part!r} has an invalid value for {key}")
    return part


def validate_flags(flags: Iterable[str]) -> list[str]:
    """Check the capability's mount flags; return them split into single options.

    Raises InvalidArgument naming the first flag that is refused.
    """
    parts: list[str] = []
    for flag in flags:
        for raw in flag.split(","):
            part = raw.strip()
            if part:
                parts.append(_check_part(part))
    return parts


_HOST = re.compile(r"[A-Za-z0-9.%-]+|[0-9A-Fa-f:.%]+")
_VOLUME = re.compile(r"/?[A-Za-z0-9_.-]{1,255}")


# DNS limits (RFC 1035): a name of at most 253 characters in labels of at most 63. Longer
# ones never resolve, and mount.glusterfs refuses them before any log is written.
_HOST_MAX = 253
_LABEL_MAX = 63


def check_host(host: str) -> str:
    if (
        not _HOST.fullmatch(host)
        or host.startswith("-")
        or len(host) > _HOST_MAX
        or any(len(label) > _LABEL_MAX for label in host.split("."))
    ):
        shown = host if len(host) <= 80 else f"{host[:80]}... ({len(host)} characters)"
        raise InvalidArgument(f"gluster host {shown!r} is not a valid host name or address "
                              f"(at most {_HOST_MAX} characters, {_LABEL_MAX} per label)")
    return host


def check_volume_name(name: str) -> str:
    if not _VOLUME.fullmatch(name) or name.lstrip("/").startswith("-"):
        raise InvalidArgument(f"gluster volume name {name!r} is not valid")
    return name


def split_list(value: str) -> list[str]:
    """Items of a comma-separated context value, blanks dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


@dataclass(frozen=True)
class GlusterMount:
    """Everything that makes one `mount -t glusterfs` call."""

    volume: str
    server: str
    backup_servers: tuple[str, ...]
    options: tuple[str, ...]

    @property
    def source(self) -> str:
        return f"{self.server}:{self.volume}"

    @property
    def servers(self) -> tuple[str, ...]:
        """The volfile server, then the backups: the order the mount tries them in."""
        return (self.server, *self.backup_servers)

    def with_servers(self, servers: Sequence[str]) -> GlusterMount:
        """The same mount with its servers tried in the order of `servers` (the same
        servers, re-ordered: the first serves the volfile, the others are backups)."""
        if sorted(servers) != sorted(self.servers) or len(set(servers)) != len(servers):
            raise ValueError("with_servers re-orders the mount's servers; it takes no others")
        server, backups = servers[0], tuple(servers[1:])
        options = tuple(
            "backup-volfile-servers=" + ":".join(backups)
            if option.startswith("backup-volfile-servers=") else option
            for option in self.options
        )
        return GlusterMount(volume=self.volume, server=server, backup_servers=backups,
                            options=options)


def plan_mount(
    volume: str,
    hosts: Sequence[str],
    backup_servers: Sequence[str],
    flags: Sequence[str],
    log_file: str,
    log_level: str,
) -> GlusterMount:
    """Build the mount: the first host serves the volfile; the other hosts and the backup
    servers (deduplicated, in order) become `backup-volfile-servers`."""
    check_volume_name(volume)
    if not hosts:
        raise InvalidArgument("no gluster host to mount from")
    server = check_host(hosts[0])
    backups: list[str] = []
    for host in [*hosts[1:], *backup_servers]:
        if host != server and host not in backups:
            backups.append(check_host(host))
    user = validate_flags(flags)
    options = [f"log-file={log_file}"]
    if not any(part.startswith("log-level=") for part in user):
        options.append(f"log-level={log_level}")
    if backups:
        options.append("backup-volfile-servers=" + ":".join(backups))
    options.extend(ALWAYS)
    options.extend(part for part in user if part not in ALWAYS)
    return GlusterMount(
        volume=volume, server=server, backup_servers=tuple(backups), options=tuple(options)
    )


def volume_of_source(source: str) -> str:
    """The volume name in a mountinfo source `host:vol` / `host:/vol` (hosts may contain
    colons for IPv6, the volume never does)."""
    return source.rpartition(":")[2].lstrip("/")
