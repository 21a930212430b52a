"""``citystream privacy``: data-subject requests about a plate (search, erase), the audit log, retention.

A plate is found through its keyed pseudonym, computed exactly as the worker does
(:func:`citystream.processors.plates.plates.pseudonym` with ``worker.pseudonym_key(tenant)``) for every tenant
that has plate reads stored (``--tenant`` narrows it). The linked records are those of
:func:`citystream.privacy_store.linked_where`: the plate reads, their watchlist alerts, the archived
frames they were read on, dead letters carrying the pseudonym or one of those frames, and the
``vehicles_1h`` buckets they were counted in. Face matches on the same frames concern other people
and are not touched. The plate text itself is never stored, logged or audited.

Every search and erase appends an audit entry (actor = ``--actor`` or the OS user; an erase needs
``--reason``), also when it fails. Reads take the read-only path; the erasure and the audit entry go
through the owning sink's ``/privacy`` route when a sink holds the embedded store.

``--json`` shapes (stable): search ``{"pseudonyms": [{"tenant", "pseudonym"}], "counts": {table: n},
"records": {table: [row, ...]}}``; erase ``{"pseudonyms", "counts": {table: n}, "frame_files": n,
"frame_files_missing": [ref, ...]}`` (files not found under ``sink.frames_dir`` here);
audit ``[entry, ...]`` newest first; retention ``[{"what", "where", "days", "purpose", "store_ttl"}]``.
"""

from __future__ import annotations

import csv
import getpass
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from citystream import audit
from citystream.cli import config_option, fail, print_json, settings_of
from citystream.clickhouse import StoreError
from citystream.privacy_store import SEARCHED, Pair, call, reading_tenants, search
from citystream.schemas import migrate as schema
from citystream.settings import Settings
from citystream.sinks.query_cli import jsonable


def plate_pairs(settings: Settings, registration: str, province: str, tenant: str | None) -> list[Pair]:
    """``(tenant, pseudonym)`` of the plate for each tenant with stored reads (or only ``tenant``) and a key."""
    from citystream.processors.plates.plates import pseudonym

    tenants = [tenant] if tenant else reading_tenants(settings)
    pairs: list[Pair] = []
    for name in tenants:
        key = settings.worker.pseudonym_key(name)
        if key is None:
            click.echo(f"citystream: no worker.pseudonym_keys entry for tenant {name!r}: its reads cannot be "
                       "linked to the plate", err=True)
            continue
        pairs.append((name, pseudonym(registration, province, key)))
    if tenants and not pairs:
        fail("no pseudonym key for any tenant with plate reads (worker.pseudonym_keys): the plate cannot be "
             "linked to its records", 2)
    return pairs


def _actor(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _subject(pairs: list[Pair]) -> str:
    return "plate:" + ",".join(sorted({p for _t, p in pairs})) if pairs else "plate (no stored reads to key it)"


def _record(settings: Settings, entry: audit.AuditEntry, after_error: bool = False) -> None:
    """Audit ``entry``; a write failure ends the command (after a failed action: a warning, the action's error wins)."""
    try:
        audit.record(settings, entry)
    except (StoreError, ValueError) as exc:
        if not after_error:
            fail(f"the audit entry could not be written: {exc}")
        click.echo(f"citystream: the audit entry of the failed {entry.action} could not be written: {exc}", err=True)


def plate_options(func: Any) -> Any:
    """The options naming a plate and who asks: --plate, --province, --tenant, --actor, --legal-basis."""
    for option in reversed([
        click.option("--plate", "registration", required=True, help="Registration as on the plate, e.g. '1กข 1234'."),
        click.option("--province", required=True, help="Province as on the plate, e.g. 'ปทุมธานี'."),
        click.option("--tenant", default=None, help="Only this tenant's records (default: every tenant with reads)."),
        click.option("--actor", default=None, help="Who runs the request (default: the OS user)."),
        click.option("--legal-basis", default="", help="Legal basis recorded in the audit log, e.g. 'PDPA s.30'."),
    ]):
        func = option(func)
    return func


@click.group("privacy")
def privacy() -> None:
    """Data-subject requests (search, erase), the audit log and retention (Thai PDPA)."""


@privacy.command("search")
@plate_options
@click.option("--reason", default="data-subject access request", show_default=True, help="Why (audited).")
@click.option("--json", "as_json", is_flag=True, help="Print the records as one JSON document.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the records as CSV (table, event_id, time, record JSON).")
@config_option
@click.pass_context
def search_cmd(ctx: click.Context, registration: str, province: str, tenant: str | None, actor: str | None,
               legal_basis: str, reason: str, as_json: bool, as_csv: bool, config: str | None) -> None:
    """Every stored record linked to a plate, across tables; the search is audited."""
    if as_json and as_csv:
        fail("--json and --csv exclude each other", 2)
    settings = settings_of(ctx)
    entry = {"actor": _actor(actor), "action": "privacy.search", "reason": reason, "legal_basis": legal_basis,
             "tenant": tenant or ""}
    try:
        pairs = plate_pairs(settings, registration, province, tenant)
        found = search(settings, pairs)
    except StoreError as exc:
        _record(settings, audit.AuditEntry(subject="plate", details={"error": str(exc)[:500]}, **entry), True)
        fail(str(exc))
    counts = {table: len(rows) for table, rows in found.items()}
    _record(settings, audit.AuditEntry(subject=_subject(pairs), details={"counts": counts}, **entry))
    records = {table: [{k: jsonable(v) for k, v in row.items()} for row in rows] for table, rows in found.items()}
    if as_json:
        print_json({"pseudonyms": [{"tenant": t, "pseudonym": p} for t, p in pairs], "counts": counts,
                    "records": records})
    elif as_csv:
        _write_csv(records)
    else:
        for table in SEARCHED:
            click.echo(f"{table}\t{counts[table]}")


def _write_csv(records: dict[str, list[dict[str, Any]]]) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["table", "event_id", "time", "record"])
    for table, rows in records.items():
        time_column = schema.TIME_COLUMNS[table]
        for row in rows:
            out.writerow([table, row.get("event_id", ""), row.get(time_column, ""),
                          orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()])


@privacy.command("erase")
@plate_options
@click.option("--reason", required=True, help="Why (audited), e.g. the request's reference.")
@click.option("--json", "as_json", is_flag=True, help="Print counts per table as JSON.")
@config_option
@click.pass_context
def erase_cmd(ctx: click.Context, registration: str, province: str, tenant: str | None, actor: str | None,
              legal_basis: str, reason: str, as_json: bool, config: str | None) -> None:
    """Delete every record linked to a plate, and its archived frames; prints counts per table; audited."""
    if not reason.strip():
        fail("--reason must say why", 2)
    settings = settings_of(ctx)
    entry = {"actor": _actor(actor), "action": "privacy.erase", "reason": reason, "legal_basis": legal_basis,
             "tenant": tenant or ""}
    pairs: list[Pair] = []
    try:
        pairs = plate_pairs(settings, registration, province, tenant)
        result = call(settings, "erase", {"pairs": pairs}) if pairs else {"counts": {}, "frame_refs": []}
    except StoreError as exc:
        _record(settings, audit.AuditEntry(subject=_subject(pairs),
                                           details={"error": str(exc)[:500]}, **entry), True)
        fail(str(exc))
    counts = {table: int(result["counts"].get(table, 0)) for table in SEARCHED}
    files, missing = delete_frames(settings.sink.frames_dir, [str(r) for r in result["frame_refs"]])
    _record(settings, audit.AuditEntry(subject=_subject(pairs), details={
        "counts": counts, "frame_files": files, "frame_files_missing": len(missing)}, **entry))
    if missing:
        click.echo(f"citystream: {len(missing)} frame file(s) not under {settings.sink.frames_dir} (pruned already, "
                   "or the archive is on the sink's host: delete them there): " + " ".join(missing), err=True)
    if as_json:
        print_json({"pseudonyms": [{"tenant": t, "pseudonym": p} for t, p in pairs], "counts": counts,
                    "frame_files": files, "frame_files_missing": missing})
    else:
        for table in SEARCHED:
            click.echo(f"{table}\t{counts[table]}")
        click.echo(f"frame files\t{files}")


def delete_frames(root: Path, refs: list[str]) -> tuple[int, list[str]]:
    """Delete archived frame files by reference (only inside ``root``); returns the count and the refs not found."""
    base = root.resolve()
    deleted = 0
    missing: list[str] = []
    for ref in refs:
        path = (base / ref).resolve()
        if not path.is_relative_to(base) or path == base:
            click.echo(f"citystream: frame reference outside the store skipped: {ref!r}", err=True)
            continue
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            missing.append(ref)
    return deleted, missing


@privacy.command("audit")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1), help="Newest entries shown.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of entries, newest first.")
@config_option
@click.pass_context
def audit_cmd(ctx: click.Context, limit: int, as_json: bool, config: str | None) -> None:
    """The audit log of personal-data processing, newest first."""
    settings = settings_of(ctx)
    try:
        rows = [{k: jsonable(v) for k, v in row.items()} for row in audit.entries(settings, limit)]
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        print_json(rows)
        return
    for row in rows:
        details = orjson.dumps(row["details"]).decode()
        click.echo("\t".join([row["at"], row["actor"], row["action"], row["tenant"] or "-", row["subject"],
                              row["reason"], row["legal_basis"] or "-", details]))


@privacy.command("retention")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@config_option
@click.pass_context
def retention_cmd(ctx: click.Context, as_json: bool, config: str | None) -> None:
    """What is kept how long: every table (settings and the store's TTL), frame files, Kafka topics."""
    from citystream.privacy_report import retention_rows

    settings = settings_of(ctx)
    rows = retention_rows(settings)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        days = "forever" if row["days"] == 0 else f"{row['days']} d"
        ttl = "" if row["store_ttl"] is None else f"\t(store: {row['store_ttl'] or 'no TTL'})"
        click.echo(f"{row['what']}\t{row['where']}\t{days}\t{row['purpose']}{ttl}")
