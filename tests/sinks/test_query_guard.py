"""The read-only query path neither reads nor writes the host, and the sink's endpoint wants its token."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.ipc as pa_ipc
import pytest

from citystream import clickhouse
from citystream.clickhouse import StoreError, check_readonly_sql
from citystream.settings import ClickHouseSettings
from citystream.sinks.query_server import QueryServer

ALLOWED = [
    "SELECT 1",
    "SELECT count() AS n FROM v_sensor_readings WHERE device_id = 'file(x)' -- into outfile",
    "SELECT toStartOfHour(captured_at) AS h, count() FROM v_sensor_readings GROUP BY h;",
    "SELECT name FROM system.tables",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "SELECT replaceAll(detail, 'a', 'b') AS d FROM v_dead_letters",
]
REFUSED = [
    "SELECT 1 INTO OUTFILE '{out}' TRUNCATE",
    "select 1 into   outfile '{out}'",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM `file`('/etc/passwd')",
    "SELECT * FROM file /* c */ ('/etc/passwd')",
    "SELECT * FROM url('http://127.0.0.1:1/x', CSV)",
    "SELECT * FROM s3('http://127.0.0.1:1/b/k', CSV)",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM executable('id', TSV, 'x String')",
    "SELECT 1; SELECT 2",
    "SELECT 1 SETTINGS readonly = 0",
    "SYSTEM FLUSH LOGS",
]


@pytest.mark.unit
@pytest.mark.parametrize("sql", ALLOWED)
def test_plain_selects_pass(sql: str) -> None:
    check_readonly_sql(sql)


@pytest.mark.unit
@pytest.mark.parametrize("sql", REFUSED)
def test_host_and_network_access_is_refused(sql: str) -> None:
    with pytest.raises(StoreError, match="refused"):
        check_readonly_sql(sql.format(out="/tmp/x"))


@pytest.mark.integration
def test_into_outfile_writes_nothing_through_the_readonly_client(chdb_dsn: str, unique: str, tmp_path: Path) -> None:
    ch = ClickHouseSettings(dsn=chdb_dsn, database="system")
    out = tmp_path / "leak.csv"
    with pytest.raises(StoreError, match="refused"):
        clickhouse.run_readonly(clickhouse.reader(ch), f"SELECT 1 INTO OUTFILE '{out}' TRUNCATE")
    assert not out.exists()


@pytest.mark.integration
def test_query_endpoint_requires_its_token(chdb_dsn: str) -> None:
    server = QueryServer(ClickHouseSettings(dsn=chdb_dsn, database="system"), "127.0.0.1", 0).start()
    try:
        url = f"{server.url}/query?database=system"

        def post(sql: str, token: str | None) -> tuple[int, bytes]:
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            request = urllib.request.Request(url, data=sql.encode(), method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        assert post("SELECT 1 AS one", None)[0] == 401
        assert post("SELECT 1 AS one", "wrong")[0] == 401
        code, body = post("SELECT 1 AS one", server.token)
        assert code == 200 and pa_ipc.open_stream(body).read_all().column("one").to_pylist() == [1]
        code, body = post("SELECT * FROM file('/etc/passwd', 'LineAsString')", server.token)
        assert code == 400 and b"refused" in body
    finally:
        server.stop()


@pytest.mark.integration
def test_owner_file_is_private_and_carries_the_token(tmp_path: Path) -> None:
    ch = ClickHouseSettings(dsn=f"chdb://{tmp_path}", database="citystream")
    with clickhouse.advertise(ch, "http://127.0.0.1:1", "secret-token"):
        owner_file = tmp_path / clickhouse.OWNER_FILE
        assert owner_file.stat().st_mode & 0o777 == 0o600
        assert "secret-token" in owner_file.read_text()
    assert not owner_file.exists()
