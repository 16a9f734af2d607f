"""The sidecar versions have one source, devtools/k8s/versions.env: the harness reads it,
k8s/base and the chart carry marked copies that `make versions` (devtools/k8s/pins.py)
rewrites from it. These tests fail when a consumer disagrees or stops being marked."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from devtools.k8s import pins
from devtools.k8s.config import read_versions_file, versions

REPO = Path(__file__).resolve().parents[2]
SIDECAR_VARIABLES = {"EXTERNAL_PROVISIONER", "EXTERNAL_ATTACHER", "EXTERNAL_SNAPSHOTTER",
                     "EXTERNAL_RESIZER"}
TAGGED_SIDECAR = re.compile(r"sig-storage/csi-[a-z]+:v\d")


def test_every_consumer_pins_every_sidecar() -> None:
    for path in pins.CONSUMERS:
        assert {p.variable for p in pins.pins(path)} == SIDECAR_VARIABLES, path


def test_no_consumer_disagrees_with_versions_env() -> None:
    assert pins.disagreements() == [], "run `make versions`"


def test_the_harness_reads_versions_env() -> None:
    env, v = read_versions_file(), versions()
    assert (v.provisioner, v.attacher, v.snapshotter, v.resizer) == tuple(
        env[k] for k in ("EXTERNAL_PROVISIONER", "EXTERNAL_ATTACHER", "EXTERNAL_SNAPSHOTTER",
                         "EXTERNAL_RESIZER"))


def test_no_unmarked_sidecar_tag_anywhere() -> None:
    """A tag written next to an image name would be a copy the generator does not know."""
    files = [*REPO.glob("k8s/**/*.yaml"), *REPO.glob("charts/**/*.yaml"),
             *REPO.glob("charts/**/*.tpl")]
    found = [f"{f.relative_to(REPO)}: {line.strip()}" for f in files
             for line in f.read_text().splitlines() if TAGGED_SIDECAR.search(line)]
    assert not found


def test_a_changed_version_reaches_every_consumer(tmp_path: Path) -> None:
    copies = []
    for path in pins.CONSUMERS:
        copy = tmp_path / path.name
        shutil.copyfile(path, copy)
        copies.append(copy)
    current = read_versions_file()
    changed = {**current, "EXTERNAL_ATTACHER": "v9.9.9"}
    bad = pins.disagreements(tuple(copies), changed)
    assert len(bad) == len(copies)
    assert all(current["EXTERNAL_ATTACHER"] in b and "v9.9.9" in b for b in bad)
    assert pins.write(tuple(copies), changed) == copies
    assert pins.disagreements(tuple(copies), changed) == []
    for original, copy in zip(pins.CONSUMERS, copies, strict=True):
        # Only the marked value changed; comments and layout stay.
        diff = [(a, b) for a, b in zip(original.read_text().splitlines(),
                                        copy.read_text().splitlines(), strict=True) if a != b]
        assert len(diff) == 1 and "EXTERNAL_ATTACHER" in diff[0][1] and "v9.9.9" in diff[0][1]
