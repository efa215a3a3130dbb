"""Migrations 0005 and 0006 rebuild the search tables' indexes and refresh the planner's
statistics where the database keeps them; without statistics, searches by value still
read the lookup indexes."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from service.db import Database


def _statistics(database: Database) -> set[str] | None:
    with database.engine.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
        ).first()
        if exists is None:
            return None
        return {row[0] for row in connection.execute(text("SELECT idx FROM sqlite_stat1"))}


def _with_tokens(path: Path) -> Database:
    database = Database(f"sqlite:///{path}")
    database.upgrade("0004")
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO search_tokens (resource_type, resource_id, param, system, code) "
                "VALUES ('Goal', :id, 'lifecycle-status', NULL, 'active')"
            ),
            [{"id": f"goal-{n}"} for n in range(50)],
        )
    return database


def test_statistics_kept_before_are_refreshed_for_the_new_indexes(tmp_path: Path) -> None:
    database = _with_tokens(tmp_path / "analysed.db")
    with database.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    assert "ix_search_tokens_resource" in (_statistics(database) or set())
    database.upgrade()
    # The rebuilt index has statistics of its own again, next to the unchanged one.
    assert {"ix_search_tokens_resource", "ix_search_tokens_lookup"} <= (
        _statistics(database) or set()
    )
    database.dispose()


def test_a_database_without_statistics_is_left_without(tmp_path: Path) -> None:
    database = _with_tokens(tmp_path / "plain.db")
    database.upgrade()
    assert _statistics(database) is None
    database.downgrade("0004")
    assert _statistics(database) is None
    database.dispose()


def test_without_statistics_a_search_by_value_reads_the_lookup_index(tmp_path: Path) -> None:
    """What a database the service created itself is like: nothing has analysed it."""
    database = _with_tokens(tmp_path / "fresh.db")
    database.upgrade()
    assert _statistics(database) is None
    searches = {
        "ix_search_tokens_lookup": "SELECT resource_id FROM search_tokens WHERE resource_type"
        " = 'Goal' AND param = 'identifier' AND code = 'abc' AND system = 'urn:x'",
        "ix_search_dates_lookup": "SELECT resource_id FROM search_dates WHERE resource_type"
        " = 'Goal' AND param = 'target-date' AND low >= '2026-01-01' AND high < '2026-02-01'",
    }
    with database.engine.connect() as connection:
        for index, query in searches.items():
            plan = " ".join(
                row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}")
            )
            assert f"COVERING INDEX {index}" in plan, plan
    database.dispose()
