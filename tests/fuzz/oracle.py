"""What the fuzz suite holds against the driver, and how it says what went wrong.

After every request `Observer.after` checks: the answer's gRPC code (INTERNAL and UNKNOWN are
failures, so is a broken connection), its duration (5 s at most), that every process still
runs, that no mount appeared outside the kubelet root, that nothing appeared in (or vanished
from) the sandbox outside the root or next to it in the cluster's directory or the working
directory, that the secret marker is in no answer and no new log line, and that nothing
connected to the honeypot URL that only crafted ids name. `Observer.final` also reads the
metrics endpoints and the gluster client logs.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

from services.node import mountinfo
from tests.fuzz.values import RELATIVE_ROOTS, World, all_contexts

SLOW_S = 5.0
BAD_CODES = ("INTERNAL", "UNKNOWN")
SNIPPET = 300
# Entries of the cluster's base directory that the cluster itself makes.
CLUSTER_ENTRIES = {"kubelet", "logs", "gluster-logs", "bricks", "controller", "heketi-admin.key"}


@dataclass
class Outcome:
    """What one call did: a gRPC code (OK, INVALID_ARGUMENT...) or TRANSPORT/TIMEOUT."""

    code: str
    message: str
    seconds: float
    response: str = ""  # the answer's text format, for the secret check
    reply: Message | None = None


@dataclass
class Finding:
    kind: str
    rpc: str
    seed: int
    index: int
    fields: str
    detail: str

    def text(self) -> str:
        return (f"[{self.kind}] {self.rpc} (seed {self.seed}, request #{self.index})\n"
                f"    hostile fields: {self.fields}\n    {self.detail}")


def clip(text: str, limit: int = SNIPPET) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def marker_variants(marker: str) -> set[str]:
    """The marker as it would appear verbatim or inside base64 (std or url-safe) text, at
    any of the three byte alignments: only the characters it fully determines."""
    raw = marker.encode()
    found = {marker}
    for pad in range(3):
        start = (pad * 8 + 5) // 6
        end = (pad + len(raw)) * 8 // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            found.add(encode(b"\0" * pad + raw).decode()[start:end])
    return found


def _tree(root: Path) -> set[str]:
    """Every entry below `root` (not following symlinks, not entering mounts), as
    'relative/path:type'."""
    mounted = {m.mount_point for m in mountinfo.read()}
    entries = set()
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(here) / name
            kind = "link" if path.is_symlink() else "dir" if name in dirs else "file"
            entries.add(f"{path.relative_to(root)}:{kind}")
        dirs[:] = [d for d in dirs if os.path.join(here, d) not in mounted]
    return entries


class Observer:
    def __init__(self, world: World, base: Path, log_dirs: Iterable[Path]) -> None:
        self.world = world
        self.base = base
        self.log_dirs = list(log_dirs)
        self.variants = marker_variants(world.marker)
        self.mounts = {m.mount_id for m in mountinfo.read()}
        self.volumes: set[str] = set()  # gluster volumes the session's requests have named
        self.sandbox = _tree(world.sandbox)
        self.base_entries = set(os.listdir(base))
        self.offsets: dict[Path, int] = {}
        self.honeypot_hits = 0
        self.read_logs()  # what the set-up logged is not the fuzz's business

    # --- the checks -----------------------------------------------------------------------
    def after(self, outcome: Outcome, honeypot_hits: int,
              dead: list[str]) -> list[tuple[str, str]]:
        """(kind, detail) of everything wrong after one call."""
        found: list[tuple[str, str]] = []
        if outcome.code in BAD_CODES:
            found.append((outcome.code, f"answered {outcome.code}: {clip(outcome.message)}"))
        if outcome.code == "TRANSPORT":
            found.append(("transport", f"the call failed below gRPC: {clip(outcome.message)}"))
        if outcome.seconds >= SLOW_S or outcome.code == "TIMEOUT":
            found.append(("slow", f"took {outcome.seconds:.1f} s (limit {SLOW_S:g} s), "
                                  f"answer {outcome.code}: {clip(outcome.message, 120)}"))
        for name in dead:
            found.append(("crash", f"process {name} died"))
        leaked = self._leak(outcome.message + "\n" + outcome.response)
        if leaked:
            found.append(("secret-in-answer", f"the answer carries the secret marker "
                                              f"({leaked}): {clip(outcome.message)}"))
        found += self._mounts() + self._files()
        for path, line in self.read_logs():
            found.append(("secret-in-log", f"{path.name}: {clip(line)}"))
        if honeypot_hits > self.honeypot_hits:
            found.append(("unconfigured-url-contacted",
                          f"{honeypot_hits - self.honeypot_hits} connection(s) to "
                          f"{self.world.honeypot_url}, a URL only crafted ids name"))
            self.honeypot_hits = honeypot_hits
        return found

    def _leak(self, text: str) -> str:
        return next((v for v in self.variants if v in text), "")

    def _mounts(self) -> list[tuple[str, str]]:
        """New mounts outside the kubelet root that are this session's: under its directory,
        or of a gluster volume its requests name. (Other test runs on the machine mount
        their own volumes meanwhile; those are not the driver under test.)"""
        found = []
        root = str(self.world.kubelet_root) + "/"
        self.volumes |= {c["volume"] for c in all_contexts(self.world) if c.get("volume")}
        for mount in mountinfo.read():
            if mount.mount_id in self.mounts:
                continue
            self.mounts.add(mount.mount_id)
            point = mount.mount_point
            ours = point.startswith(str(self.base) + "/") or \
                mount.source.partition(":")[2] in self.volumes
            if ours and not point.startswith(root):
                found.append(("mount-outside-root",
                              f"{mount.fstype} {mount.source} mounted at {point}"))
        return found

    def _files(self) -> list[tuple[str, str]]:
        found = []
        now = _tree(self.world.sandbox)
        for entry in sorted(now - self.sandbox):
            found.append(("created-outside-root", f"{self.world.sandbox}/{entry} appeared"))
        for entry in sorted(self.sandbox - now):
            found.append(("removed-outside-root", f"{self.world.sandbox}/{entry} vanished"))
        self.sandbox = now
        entries = set(os.listdir(self.base))
        for name in sorted(entries - self.base_entries - CLUSTER_ENTRIES):
            found.append(("created-outside-root", f"{self.base / name} appeared"))
        self.base_entries = entries
        for name in RELATIVE_ROOTS:
            for parent in (Path.cwd(), Path("/")):
                stray = parent / name
                if stray.exists() or stray.is_symlink():
                    found.append(("created-outside-root",
                                  f"{stray} appeared (a relative path was acted on)"))
                    shutil.rmtree(stray, ignore_errors=True)
        return found

    def read_logs(self) -> list[tuple[Path, str]]:
        """Lines logged since the last call that carry the marker."""
        hits = []
        for directory in self.log_dirs:
            for path in sorted(directory.glob("*.log")):
                start = self.offsets.get(path, 0)
                try:
                    with path.open("rb") as f:
                        f.seek(start)
                        chunk = f.read()
                except OSError:
                    continue
                self.offsets[path] = start + len(chunk)
                text = chunk.decode(errors="replace")
                if self._leak(text):
                    hits += [(path, line) for line in text.splitlines() if self._leak(line)]
        return hits

    def metrics(self, name: str, text: str) -> list[tuple[str, str]]:
        return [("secret-in-metrics", f"{name} /metrics: {clip(line)}")
                for line in text.splitlines() if self._leak(line)]
