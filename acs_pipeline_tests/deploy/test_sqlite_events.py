"""The local instance's event log (acs_pipeline/deploy/sqlite_events.py): Dagster's SQLite event
log storage that keeps its engines, loaded from dagster.local.yaml as `make demo` copies it."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from acs_pipeline.deploy import sqlite_events
from acs_pipeline.deploy.sqlite_events import ReusingSqliteEventLogStorage

REPO = Path(__file__).resolve().parents[2]


@dg.asset
def upstream() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 3})


@dg.asset(deps=[upstream], check_specs=[dg.AssetCheckSpec("positive", asset="downstream")])
def downstream():
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(check_name="positive", passed=True)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.local.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_the_local_instance_file_names_this_storage() -> None:
    storage = yaml.safe_load((REPO / "dagster.local.yaml").read_text())["event_log_storage"]
    assert (storage["module"], storage["class"]) == (
        ReusingSqliteEventLogStorage.__module__, ReusingSqliteEventLogStorage.__name__)


def test_the_override_is_pinned_to_the_dagster_it_was_read_against() -> None:
    """It overrides SqliteEventLogStorage._connect (private): an upgrade must re-read it."""
    assert version("dagster") == "1.13.27"
    assert callable(SqliteEventLogStorage._connect)
    assert callable(SqliteEventLogStorage._initdb)


def test_the_instance_keeps_runs_events_and_checks_where_dagster_would(home: Path) -> None:
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, ReusingSqliteEventLogStorage)
        assert Path(storage._base_dir) == home / "storage"  # Dagster's default place
        assert storage.supports_global_concurrency_limits  # dagster.local.yaml's pools
        for _ in range(2):
            assert dg.materialize([upstream, downstream], instance=instance).success
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        latest = instance.get_latest_materialization_event(dg.AssetKey("upstream"))
        assert latest is not None and latest.run_id == runs[0].run_id
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("downstream"), "positive")])
        assert check[dg.AssetCheckKey(dg.AssetKey("downstream"), "positive")].run_id \
            == runs[0].run_id
    # another instance (another process, e.g. the webserver) reads what was written
    with dg.DagsterInstance.get() as reader:
        assert len(reader.get_runs()) == 2
        assert (home / "storage" / "index.db").exists()
        types = [e.dagster_event_type for e in reader.all_logs(runs[0].run_id)
                 if e.is_dagster_event]
        assert dg.DagsterEventType.ASSET_MATERIALIZATION in types
        assert dg.DagsterEventType.ASSET_CHECK_EVALUATION in types


def test_an_engine_per_database_not_per_event(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = sqlite_events.create_engine

    def counting(url, **kwargs):
        made.append(str(url))
        return real(url, **kwargs)

    monkeypatch.setattr(sqlite_events, "create_engine", counting)
    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([upstream, downstream], instance=instance).success
        run_id = instance.get_runs()[0].run_id
        events = len(instance.all_logs(run_id))
    assert events > 10
    assert sorted(Path(u).name for u in made) == [f"{run_id}.db", "index.db"]


def test_dagsters_own_class_makes_one_per_connection(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What the subclass saves: Dagster's makes an engine each time it connects."""
    import dagster._core.storage.event_log.sqlite.sqlite_event_log as dagster_sqlite

    made: list[str] = []
    real = dagster_sqlite.create_engine
    monkeypatch.setattr(dagster_sqlite, "create_engine",
                        lambda url, **kw: made.append(str(url)) or real(url, **kw))
    storage = SqliteEventLogStorage(str(tmp_path))
    made.clear()
    for _ in range(3):
        with storage.index_connection():
            pass
    assert len(made) == 3


def test_engines_beyond_the_bound_are_disposed(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_events, "MAX_ENGINES", 3)
    storage = ReusingSqliteEventLogStorage(str(tmp_path))
    for shard in ("index", "run_a", "run_b", "run_c", "index", "run_d"):
        with storage._connect(shard):
            pass
    assert list(storage._engines) == ["run_c", "index", "run_d"]  # least recently used out
    with storage.run_connection("run_a") as conn:  # dropped engines come back on use
        assert conn.execute(SqlEventLogStorageTable.select().limit(1)).fetchall() == []
    storage.dispose()
    assert not storage._engines


def test_without_dagster_home_or_base_dir_it_says_what_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(ValueError, match="DAGSTER_HOME is not set"):
        ReusingSqliteEventLogStorage.from_config_value(None, {})


def test_a_base_dir_given_in_config_wins(tmp_path: Path) -> None:
    storage = ReusingSqliteEventLogStorage.from_config_value(None, {"base_dir": str(tmp_path)})
    assert Path(storage._base_dir) == tmp_path
    assert (tmp_path / "index.db").exists()
