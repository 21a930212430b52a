"""``citystream topics apply [--dry-run] [--json]``: make the cluster's topics match the topic map and settings."""

from __future__ import annotations

import click

from citystream.cli import config_option, fail, print_json, settings_of


@click.group()
def topics() -> None:
    """Kafka topics of the topic map (schemas/topics.py) with settings.kafka's replication and overrides."""


@topics.command("apply")
@config_option
@click.option("--dry-run", is_flag=True, help="Only report what would change.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1), default=30.0, show_default=True,
              help="Seconds per admin request.")
@click.pass_context
def apply_cmd(ctx: click.Context, config: str | None, dry_run: bool, as_json: bool, timeout_s: float) -> None:
    """Create missing topics, add partitions, update topic configs; report what cannot change in place."""
    from citystream.topics import TopicError, apply

    settings = settings_of(ctx)
    try:
        report = apply(settings, dry_run=dry_run, timeout_s=timeout_s)
    except TopicError as exc:
        fail(str(exc))
    if as_json:
        print_json({"bootstrap": settings.kafka.bootstrap, **report.as_dict()})
        return
    verb = "would" if dry_run else "did"
    click.echo(f"{settings.kafka.bootstrap}: {report.brokers} broker(s), {len(report.changes)} topics")
    for change in report.changes:
        what = ", ".join(change.actions) if change.actions else "ok"
        click.echo(f"  {change.topic:40s} {verb if change.actions else ''} {what}".rstrip())
        for key, (current, wanted) in change.config.items():
            if current is not None:
                click.echo(f"      {key}: {current} -> {wanted}")
        for note in change.notes:
            click.echo(f"      note: {note}")
