"""``citystream watchlist add-plate | add-face | list | remove``: manage the compacted watchlist topic."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import click

from citystream.cli import config_option, fail, print_json, settings_of
from citystream.processors.watchlists import watchlists
from citystream.schemas.events import error_summary

log = logging.getLogger(__name__)
DURATION = re.compile(r"^(\d+)([hdw])$")


def parse_expiry(text: str, now: datetime) -> datetime:
    """``30d`` / ``12h`` / ``2w`` from now, or an ISO 8601 time with zone."""
    m = DURATION.match(text.strip())
    if m:
        amount, unit = int(m.group(1)), m.group(2)
        return now + timedelta(hours=amount) * {"h": 1, "d": 24, "w": 24 * 7}[unit]
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"not a duration (30d, 12h, 2w) or ISO time: {text!r}") from exc
    if when.tzinfo is None:
        raise click.BadParameter("an ISO expiry needs a time zone, e.g. 2026-12-31T23:59:00+07:00")
    return when.astimezone(UTC)


def _common(func: click.decorators.FC) -> click.decorators.FC:
    for option in reversed([
        click.option("--tenant", required=True, help="Municipality the entry belongs to."),
        click.option("--reason", required=True, help="Why this entry exists (kept with it)."),
        click.option("--legal-basis", required=True, help="PDPA legal basis, e.g. a court order number."),
        click.option("--expires", required=True, help="Expiry: 30d, 12h, 2w or ISO time with zone."),
        click.option("--label", default="", help="What the control room sees."),
        click.option("--by", "created_by", default="", help="Who added the entry."),
        click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON."),
        config_option,
    ]):
        func = option(func)
    return func


def _save(ctx: click.Context, entry_fields: dict[str, object], as_json: bool) -> None:
    settings = settings_of(ctx)
    try:
        entry = watchlists.WatchlistEntry.model_validate(entry_fields)
    except ValueError as exc:
        fail(f"invalid entry: {error_summary(exc)}", 2)
    try:
        watchlists.publish(settings, entry)
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    log.info("watchlist entry written", extra={"entry_id": entry.entry_id, "tenant": entry.tenant,
                                                "entry_kind": entry.kind, "by": entry.created_by})
    if as_json:
        print_json(_public(entry))
    else:
        click.echo(entry.entry_id)


def _public(entry: watchlists.WatchlistEntry) -> dict[str, object]:
    doc = entry.model_dump(mode="json", exclude={"embedding"})
    doc["has_template"] = entry.embedding is not None
    return doc


@click.group()
def watchlist() -> None:
    """Plate and face watchlists (compacted Kafka topic, loaded by every worker)."""


@watchlist.command("add-plate")
@click.argument("registration")
@click.option("--province", default="", help="Province as on the plate; empty matches any province.")
@_common
@click.pass_context
def add_plate(ctx: click.Context, registration: str, province: str, tenant: str, reason: str, legal_basis: str,
              expires: str, label: str, created_by: str, as_json: bool, config: str | None) -> None:
    """Add (or renew) a plate, e.g. ``add-plate "1กข 1234" --province กรุงเทพมหานคร``."""
    now = datetime.now(UTC)
    _save(ctx, {"entry_id": watchlists.plate_entry_id(tenant, registration, province), "tenant": tenant,
                "kind": "plate", "label": label, "registration": registration.strip(), "province": province.strip(),
                "reason": reason, "legal_basis": legal_basis, "expires_at": parse_expiry(expires, now),
                "created_at": now, "created_by": created_by}, as_json)


@watchlist.command("add-face")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@_common
@click.pass_context
def add_face(ctx: click.Context, image: str, tenant: str, reason: str, legal_basis: str, expires: str, label: str,
             created_by: str, as_json: bool, config: str | None) -> None:
    """Add a person from an enrolment photo with exactly one face (only the template is kept)."""
    import cv2

    from citystream.processors.faces.faces import single_template

    bgr = cv2.imread(image, cv2.IMREAD_COLOR)
    if bgr is None:
        fail(f"cannot read image {image}", 2)
    try:
        template = single_template(bgr)
    except ValueError as exc:
        fail(str(exc), 1)
    now = datetime.now(UTC)
    _save(ctx, {"entry_id": watchlists.new_face_entry_id(), "tenant": tenant, "kind": "face", "label": label,
                "embedding": template, "reason": reason, "legal_basis": legal_basis,
                "expires_at": parse_expiry(expires, now), "created_at": now, "created_by": created_by}, as_json)


@watchlist.command("list")
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--all", "show_all", is_flag=True, help="Include expired entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry per line.")
@config_option
@click.pass_context
def list_entries(ctx: click.Context, tenant: str | None, show_all: bool, as_json: bool, config: str | None) -> None:
    """List entries (active ones unless --all); face templates are never printed."""
    settings = settings_of(ctx)
    now = datetime.now(UTC)
    try:
        raw = watchlists.read_all(settings)
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    entries = watchlists.active_entries(raw, now if not show_all else datetime.min.replace(tzinfo=UTC))
    for entry in entries:
        if tenant and entry.tenant != tenant:
            continue
        if as_json:
            print_json({**_public(entry), "active": entry.active(now)})
        else:
            what = f"{entry.registration} {entry.province}".strip() if entry.kind == "plate" else "face template"
            state = "active" if entry.active(now) else "expired"
            click.echo(f"{entry.entry_id}  {entry.tenant}  {entry.kind}  {what}  {state} until "
                       f"{entry.expires_at.isoformat()}  {entry.label}")


@watchlist.command("remove")
@click.argument("entry_id")
@click.option("--reason", required=True, help="Why the entry is removed (logged).")
@config_option
@click.pass_context
def remove(ctx: click.Context, entry_id: str, reason: str, config: str | None) -> None:
    """Remove an entry (tombstone in the compacted topic); workers stop matching it."""
    settings = settings_of(ctx)
    try:
        watchlists.remove(settings, entry_id)
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    log.info("watchlist entry removed", extra={"entry_id": entry_id, "reason": reason})
    click.echo(entry_id)
