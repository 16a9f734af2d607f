"""Per-staging-path records that survive a restart of the node container."""

from __future__ import annotations

from services.node.state import StageRecord, StateStore, state_dir


def record(path: str = "/k/plugins/x/globalmount", volume_id: str = "v1") -> StageRecord:
    return StageRecord(volume_id, path, "h:vol", ("log-file=/l", "ro"), "/l")


async def test_records_survive_a_new_store(tmp_path):
    directory = state_dir(str(tmp_path), "drv")
    assert directory == tmp_path / "plugins" / "drv" / "state"
    store = StateStore(directory)
    await store.put(record())
    await store.add_target("/k/plugins/x/globalmount", "/k/pods/a/mount", True)
    await store.add_target("/k/plugins/x/globalmount", "/k/pods/b/mount", False)
    await store.remove_target("/k/pods/b/mount")

    again = StateStore(directory)
    await again.load()
    loaded = again.get("/k/plugins/x/globalmount")
    assert loaded is not None
    assert loaded.options == ("log-file=/l", "ro")
    assert loaded.targets == {"/k/pods/a/mount": True}
    assert again.owner_of_target("/k/pods/a/mount") == loaded

    await again.delete("/k/plugins/x/globalmount")
    assert list(directory.iterdir()) == []
    await again.delete("/k/plugins/x/globalmount")  # idempotent


async def test_unreadable_files_are_skipped(tmp_path):
    directory = tmp_path / "state"
    directory.mkdir()
    (directory / "stage-bad.json").write_text("{not json")
    store = StateStore(directory)
    await store.put(record())
    fresh = StateStore(directory)
    await fresh.load()
    assert [r.volume_id for r in fresh.all()] == ["v1"]


async def test_missing_directory_loads_empty(tmp_path):
    store = StateStore(tmp_path / "nope")
    await store.load()
    assert store.all() == []
