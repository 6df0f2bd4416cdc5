"""The catalog on SQLite and on PostgreSQL: the same calls, the same answers, the same schema.

Every test runs once per backend (`catalog_url` is parametrized in conftest.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, select, text

from stackvault.catalog import Catalog, schema
from stackvault.catalog.models import BackupRow, Base, DiskRow, JobRow
from stackvault.catalog.schema import FIRST_REVISION, HEAD_REVISION, VERSION_TABLE, current_revision, head_revision
from stackvault.errors import LockedError, UsageError

from .records import TIB, record

TESTS_DIR = Path(__file__).resolve().parents[1]
SRC_DIR = TESTS_DIR.parent / "src"


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC_DIR), str(TESTS_DIR)])}


def count(catalog: Catalog, row_type: type) -> int:
    with catalog.session() as s:
        return s.scalar(select(func.count()).select_from(row_type))


# --- jobs and backups -----------------------------------------------------------------------------


def test_jobs_start_running_and_finish_with_their_report(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    job = catalog.start_job("backup", "repo-1")
    with catalog.session() as s:
        assert s.get(JobRow, job).status == "running"
    catalog.finish_job(job, "failed", "x" * 5000, backup_id=None, report={"disks": [{"name": "vda"}]})
    catalog.finish_job("no-such-job", "success")  # a job row lost to a rebuild is not an error
    with catalog.session() as s:
        row = s.get(JobRow, job)
    assert (row.kind, row.repo_id, row.status) == ("backup", "repo-1", "failed")
    assert len(row.message) == 2000 and row.finished >= row.started
    assert row.report == {"disks": [{"name": "vda"}]}


def test_backups_with_disks_by_repository_and_disk(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    catalog.add_backup("repo-1", record("b2", "2026-01-02T00:00:00+00:00", disk_keys=("root", "data")))
    catalog.add_backup("repo-1", record("b1", "2026-01-01T00:00:00+00:00", disk_keys=("root",)))
    catalog.add_backup("repo-2", record("b3", "2026-01-03T00:00:00+00:00", disk_keys=("root",)))

    rows = catalog.backups("repo-1")
    assert [r.backup_id for r in rows] == ["b1", "b2"]  # oldest first
    b2 = rows[1]
    assert [(d.position, d.name, d.disk_key) for d in b2.disks] == [(0, "vda", "root"), (1, "vdb", "data")]
    assert b2.size == 10 * TIB and b2.disks[0].size == 5 * TIB and b2.disks[0].blocks_total == 5 * TIB // 524288
    assert b2.source == {"server": {"id": "srv-1", "name": "web"}} and b2.tags == {"az": "nova", "n": 1}
    assert [r.backup_id for r in catalog.backups("repo-1", disk_key="data")] == ["b2"]
    assert [r.backup_id for r in catalog.backups("repo-1", disk_key="root")] == ["b1", "b2"]
    assert [r.backup_id for r in catalog.backups("repo-2")] == ["b3"]


def test_adding_a_backup_again_replaces_it(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    catalog.add_backup("repo-1", record("b1", "2026-01-01T00:00:00+00:00"))
    again = record("b1", "2026-01-01T00:00:00+00:00")
    again.consistency = "quiesced"
    catalog.add_backup("repo-1", again)
    (row,) = catalog.backups("repo-1")
    assert row.consistency == "quiesced" and len(row.disks) == 1


def test_remove_backup_removes_its_disks(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    catalog.add_backup("repo-1", record("b1", "2026-01-01T00:00:00+00:00", disks=2))
    catalog.add_backup("repo-1", record("b2", "2026-01-02T00:00:00+00:00", disks=3))
    catalog.remove_backup("b1")
    catalog.remove_backup("b1")  # already gone: nothing to do
    assert [r.backup_id for r in catalog.backups("repo-1")] == ["b2"]
    assert count(catalog, DiskRow) == 3


def test_rebuild_replaces_only_that_repositorys_backups(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    for i in range(3):
        catalog.add_backup("repo-1", record(f"old{i}", f"2026-01-0{i + 1}T00:00:00+00:00", disks=2))
    catalog.add_backup("repo-2", record("other", "2026-01-01T00:00:00+00:00"))
    job = catalog.start_job("backup", "repo-1")

    truth = [record("new1", "2026-02-01T00:00:00+00:00"), record("old0", "2026-01-01T00:00:00+00:00", disks=2)]
    assert catalog.rebuild("repo-1", truth) == 2
    assert [r.backup_id for r in catalog.backups("repo-1")] == ["old0", "new1"]
    assert [r.backup_id for r in catalog.backups("repo-2")] == ["other"]
    assert count(catalog, DiskRow) == 1 + 2 + 1
    with catalog.session() as s:
        assert s.get(JobRow, job) is not None  # job history is not the repository's to rebuild


# --- schema migrations ----------------------------------------------------------------------------


def test_an_empty_database_is_migrated_to_the_schema_of_the_models(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    assert current_revision(catalog.engine) == head_revision()
    with catalog.engine.connect() as conn:
        migration = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        diff = compare_metadata(migration, Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == [], f"the migrations do not build the models' schema: {diff}"
    assert tables == {"jobs", "backups", "disks", "policy_runs", "policy_items", "policies", VERSION_TABLE}
    Catalog(catalog_url)  # opening a current catalog again changes nothing
    assert current_revision(catalog.engine) == head_revision()


def test_a_catalog_made_before_migrations_is_adopted_with_its_rows(catalog_url: str) -> None:
    old = create_engine(catalog_url)  # what stackvault did before migrations: the 0001 tables, no version table
    with old.begin() as conn:
        command.upgrade(schema.alembic_config(conn), FIRST_REVISION)
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    with old.begin() as conn:
        conn.execute(text("INSERT INTO backups (backup_id, repo_id, created, finished, level, requested_level, "
                          "status, name, host, source, tags, size, bytes_read, bytes_stored, duration_s) VALUES "
                          "('b1', 'repo-1', '2026-01-01', '2026-01-01', 'full', 'full', 'success', 'n', 'h', "
                          "'{}', '{}', 10, 10, 5, 1.0)"))
        conn.execute(text("INSERT INTO disks (backup_id, position, name, disk_key, size, block_size, level, "
                          "bytes_read, bytes_stored, blocks_total, blocks_changed) VALUES "
                          "('b1', 0, 'vda', 'root', 10, 4096, 'full', 10, 5, 1, 1)"))
    old.dispose()

    catalog = Catalog(catalog_url)
    assert current_revision(catalog.engine) == head_revision()
    (row,) = catalog.backups("repo-1")
    assert (row.backup_id, [d.disk_key for d in row.disks]) == ("b1", ["root"])
    catalog.add_backup("repo-1", record("b2", "2026-01-02T00:00:00+00:00"))
    assert [r.backup_id for r in catalog.backups("repo-1")] == ["b1", "b2"]


NEXT_REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = "0099_job_note"
down_revision = "{head}"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("note", sa.String(), nullable=False, server_default="none"))
'''


def test_an_older_catalog_is_upgraded_keeping_its_rows(catalog_url: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog at the head opened by a stackvault whose migrations go one further (a scripted 0099)."""
    old = Catalog(catalog_url)
    old.add_backup("repo-1", record("b1", "2026-01-01T00:00:00+00:00", disks=2))
    job = old.start_job("backup", "repo-1")
    old.close()

    newer = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, newer)
    (newer / "versions" / "0099_job_note.py").write_text(NEXT_REVISION.format(head=HEAD_REVISION))
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", newer)
    monkeypatch.setattr(schema, "HEAD_REVISION", "0099_job_note")

    catalog = Catalog(catalog_url)
    assert current_revision(catalog.engine) == "0099_job_note"
    with catalog.session() as s:
        assert s.execute(text("SELECT note FROM jobs WHERE id = :id"), {"id": job}).scalar() == "none"
    (row,) = catalog.backups("repo-1")
    assert len(row.disks) == 2 and row.size == 10 * TIB


def test_a_catalog_of_a_newer_stackvault_is_refused(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    with catalog.session() as s, s.begin():
        s.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099_future'"))  # noqa: S608 - a constant
    catalog.close()
    with pytest.raises(UsageError) as err:
        Catalog(catalog_url)
    message = str(err.value)
    assert "\n" not in message
    assert "0099_future" in message and "newer than this stackvault" in message and "upgrade stackvault" in message
    assert current_revision(catalog.engine) == "0099_future"  # refused, not downgraded


def test_a_half_made_catalog_without_a_version_is_refused(catalog_url: str) -> None:
    other = create_engine(catalog_url)
    BackupRow.__table__.create(other)
    other.dispose()
    with pytest.raises(UsageError, match="has the tables backups but not disks, jobs"):
        Catalog(catalog_url)


def test_the_revisions_written_in_code_match_the_migration_scripts() -> None:
    """HEAD_REVISION spares each command an alembic import; FIRST_REVISION is what adoption stamps."""
    assert head_revision() == HEAD_REVISION
    assert FIRST_REVISION == "0001_initial"  # the schema `create_all` made before migrations, forever


# --- several proxies ------------------------------------------------------------------------------


def test_two_processes_writing_at_once_lose_no_rows(catalog_url: str) -> None:
    Catalog(catalog_url).close()  # migrated once here; the writers also race on the open itself below
    per_writer = 40
    writers = [subprocess.Popen([sys.executable, "-m", "catalog.catalog_writer", catalog_url, "repo-1", name,
                                 str(per_writer)], env=child_env(), stderr=subprocess.PIPE, text=True)
               for name in ("proxy-a", "proxy-b")]
    for proc in writers:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    catalog = Catalog(catalog_url)
    ids = [r.backup_id for r in catalog.backups("repo-1")]
    assert len(ids) == 2 * per_writer and len(set(ids)) == 2 * per_writer
    assert count(catalog, DiskRow) == 2 * 2 * per_writer
    with catalog.session() as s:
        statuses = list(s.scalars(select(JobRow.status)))
    assert statuses == ["success"] * 2 * per_writer


def test_two_processes_opening_an_empty_catalog_at_once_both_succeed(catalog_url: str) -> None:
    writers = [subprocess.Popen([sys.executable, "-m", "catalog.catalog_writer", catalog_url, "repo-1", name, "1"],
                                env=child_env(), stderr=subprocess.PIPE, text=True) for name in ("a", "b", "c")]
    for proc in writers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    assert len(Catalog(catalog_url).backups("repo-1")) == 3


def test_a_new_sqlite_catalog_waits_for_another_proxy_creating_its_tables(tmp_path: Path) -> None:
    """The window of the race above, held open: another connection is writing the still-empty file
    when this one switches it to WAL. SQLite refuses that switch at once; opening waits instead."""
    path = tmp_path / "catalog.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE being_created (x)")
    committed = threading.Event()

    def commit_later() -> None:
        time.sleep(0.5)
        committed.set()
        other.execute("COMMIT")

    threading.Thread(target=commit_later).start()
    catalog = Catalog(f"sqlite:///{path}")
    assert committed.is_set()  # it waited for the other writer rather than failing
    with catalog.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert current_revision(catalog.engine) == HEAD_REVISION


def test_advisory_lock_exclusive_and_shared(catalog_url: str) -> None:
    proxy_a, proxy_b = Catalog(catalog_url), Catalog(catalog_url)
    with proxy_a.advisory_lock("repo:r1"):
        with pytest.raises(LockedError, match="catalog lock 'repo:r1' is held by another proxy"):
            with proxy_b.advisory_lock("repo:r1"):
                pass
        with proxy_b.advisory_lock("repo:r2"):  # other names are independent
            pass
    with proxy_b.advisory_lock("repo:r1"):  # released at the end of the block
        pass

    with proxy_a.advisory_lock("repo:r1", shared=True), proxy_b.advisory_lock("repo:r1", shared=True):
        with pytest.raises(LockedError):
            with Catalog(catalog_url).advisory_lock("repo:r1"):
                pass


def test_advisory_lock_waits_then_gives_up(catalog_url: str) -> None:
    proxy_a, proxy_b = Catalog(catalog_url), Catalog(catalog_url)
    with proxy_a.advisory_lock("gc"):
        started = time.monotonic()
        with pytest.raises(LockedError, match=r"waited 0.5 s"):
            with proxy_b.advisory_lock("gc", wait_s=0.5):
                pass
        assert 0.5 <= time.monotonic() - started < 5


def test_advisory_lock_of_a_killed_proxy_is_released(catalog_url: str) -> None:
    Catalog(catalog_url).close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from stackvault.catalog import Catalog, schema
        with Catalog({catalog_url!r}).advisory_lock("prune"):
            print("held", flush=True)
            time.sleep(600)
        """)], env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        catalog = Catalog(catalog_url)
        with pytest.raises(LockedError):
            with catalog.advisory_lock("prune"):
                pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        with catalog.advisory_lock("prune", wait_s=10):  # the server (or kernel) let go of the dead proxy's lock
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.parametrize("url, said", [
    ("not a url", "cannot open catalog not a url: ArgumentError"),
    ("postgresql+psycopg2://backup@127.0.0.1/catalog", "the Python module psycopg2 is missing"),
    ("sqlite:////proc/no-such-dir/catalog.db", "No such file or directory: /proc/no-such-dir"),
])
def test_a_catalog_that_cannot_be_opened_is_named_in_one_line(url: str, said: str) -> None:
    with pytest.raises(UsageError) as err:
        Catalog(url)
    assert said in str(err.value) and "\n" not in str(err.value)
