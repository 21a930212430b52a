"""The audit log on the embedded engine: appended, read back newest first, unchangeable through the read path."""

from __future__ import annotations

import stat
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from citystream import clickhouse
from citystream.audit import AuditEntry, entries, record
from citystream.clickhouse import StoreError
from citystream.privacy_store import PrivacyOpError, run_op
from citystream.schemas.migrate import migrate
from citystream.settings import ClickHouseSettings, Settings
from citystream.sinks.query_server import QueryServer


@pytest.fixture
def store(chdb_dsn: str, unique: str) -> Settings:
    """Settings on this test's migrated database of the process's chDB path."""
    settings = Settings(clickhouse=ClickHouseSettings(dsn=chdb_dsn, database=unique))
    migrate(clickhouse.connect(settings, database=False), unique)
    return settings


@pytest.mark.integration
def test_entries_are_appended_and_read_back_newest_first(store: Settings) -> None:
    record(store, AuditEntry(actor="somchai", action="privacy.search", subject="plate:" + "a" * 64,
                             reason="access request 12/2569", legal_basis="PDPA s.30", tenant="nakhon-rangsit",
                             details={"records": 3, "tables": ["plate_reads"]}))
    record(store, AuditEntry(actor="malee", action="privacy.erase", subject="plate:" + "a" * 64,
                             reason="erasure request 13/2569"))
    got = entries(store)
    assert [e["action"] for e in got] == ["privacy.erase", "privacy.search"]
    assert got[1]["actor"] == "somchai" and got[1]["tenant"] == "nakhon-rangsit"
    assert got[1]["legal_basis"] == "PDPA s.30" and got[1]["details"] == {"records": 3, "tables": ["plate_reads"]}
    assert got[0]["at"] >= got[1]["at"] and got[0]["at"].tzinfo is not None
    assert [e["action"] for e in entries(store, limit=1)] == ["privacy.erase"]


@pytest.mark.integration
def test_an_entry_without_actor_or_action_is_refused(store: Settings) -> None:
    with pytest.raises(ValueError, match="actor"):
        record(store, AuditEntry(actor=" ", action="privacy.search", subject="x", reason="r"))
    with pytest.raises(PrivacyOpError, match="actor and action"):
        run_op(clickhouse.connect(store, database=False), store.clickhouse.database, "audit",
               {"entry": {"actor": "a", "action": "", "subject": "x", "reason": "r"}})
    assert entries(store) == []


@pytest.mark.integration
@pytest.mark.parametrize("sql", [
    "ALTER TABLE audit_log UPDATE reason = 'nothing' WHERE 1",
    "ALTER TABLE audit_log DELETE WHERE 1",
    "DELETE FROM audit_log WHERE 1",
    "TRUNCATE TABLE audit_log",
    "DROP TABLE audit_log",
    "INSERT INTO audit_log (actor, action) VALUES ('x', 'forged')",
])
def test_audit_rows_cannot_be_changed_through_the_read_only_path(store: Settings, sql: str) -> None:
    record(store, AuditEntry(actor="somchai", action="privacy.search", subject="s", reason="r"))
    with pytest.raises(StoreError):
        clickhouse.query_rows(store, sql)
    assert [(e["actor"], e["action"], e["reason"]) for e in entries(store)] == [("somchai", "privacy.search", "r")]


def _post(url: str, body: bytes, token: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.integration
def test_the_privacy_route_wants_the_token_and_runs_only_its_fixed_operations(store: Settings) -> None:
    db = store.clickhouse.database
    server = QueryServer(store.clickhouse, "127.0.0.1", 0).start()
    try:
        url = f"{server.url}/privacy?database={db}"
        entry = {"actor": "somchai", "action": "privacy.search", "subject": "s", "reason": "r"}
        good = orjson.dumps({"op": "audit", "payload": {"entry": entry}})
        assert _post(url, good, None)[0] == 401
        assert _post(url, good, "wrong")[0] == 401
        assert _post(url, good, server.token)[0] == 401  # the /query token is not the /privacy token
        code, body = _post(url, good, server.privacy_token)
        assert code == 200 and "at" in orjson.loads(body)
        for bad in (b"not json", orjson.dumps({"op": "sql", "payload": {"sql": "DROP TABLE audit_log"}}),
                    orjson.dumps({"op": "erase", "payload": {"pairs": [["t", "'; DROP TABLE audit_log; --"]]}}),
                    orjson.dumps({"op": "audit", "payload": {"entry": {**entry, "details": [1]}}})):
            code, body = _post(url, bad, server.privacy_token)
            assert code == 400, body
        injected = f"{server.url}/privacy?database=" + urllib.parse.quote(f"{db}`.audit_log DELETE WHERE 1 --")
        code, body = _post(injected, good, server.privacy_token)
        assert code == 400 and b"bad database name" in body
        code, body = _post(injected.replace("/privacy?", "/query?"), b"SELECT 1", server.token)
        assert code == 400 and b"bad database name" in body
    finally:
        server.stop()
    got: list[dict[str, Any]] = entries(store)
    assert [(e["actor"], e["action"]) for e in got] == [("somchai", "privacy.search")]


@pytest.mark.integration
def test_the_privacy_token_is_its_own_and_only_the_sinks_user_can_read_a_generated_one(store: Settings) -> None:
    path = clickhouse.chdb_path(store.clickhouse.dsn)
    assert path is not None
    token_file = path / clickhouse.PRIVACY_TOKEN_FILE
    server = QueryServer(store.clickhouse, "127.0.0.1", 0).start()
    try:
        assert server.privacy_token != server.token
        assert token_file.read_text() == server.privacy_token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        with clickhouse.advertise(store.clickhouse, server.url, server.token):  # as the sink does
            owner_file = (path / clickhouse.OWNER_FILE).read_text()
        assert server.token in owner_file and server.privacy_token not in owner_file
        assert clickhouse.privacy_token(store) == server.privacy_token  # what the privacy commands send
        query = f"{server.url}/query?database={store.clickhouse.database}"
        assert _post(query, b"SELECT 1", server.privacy_token)[0] == 401  # and it opens no /query either
        assert _post(query, b"SELECT 1", server.token)[0] == 200
    finally:
        server.stop()
    assert not token_file.exists()

    configured = store.model_copy(update={"sink": store.sink.model_copy(
        update={"privacy_token": SecretStr("dpo-secret-from-a-vault")})})
    server = QueryServer(store.clickhouse, "127.0.0.1", 0,
                         privacy_token=configured.sink.privacy_token.get_secret_value()).start()
    try:
        assert not token_file.exists()  # a configured token is never written down by the sink
        assert clickhouse.privacy_token(configured) == "dpo-secret-from-a-vault"
        url = f"{server.url}/privacy?database={store.clickhouse.database}"
        entry = {"actor": "malee", "action": "privacy.search", "subject": "s", "reason": "r"}
        body = orjson.dumps({"op": "audit", "payload": {"entry": entry}})
        assert _post(url, body, server.token)[0] == 401
        assert _post(url, body, "dpo-secret-from-a-vault")[0] == 200
    finally:
        server.stop()
    with pytest.raises(ValueError, match="must differ"):
        QueryServer(store.clickhouse, "127.0.0.1", 0, token="same", privacy_token="same")
