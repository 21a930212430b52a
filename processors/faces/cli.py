"""``citystream faces match IMAGE...``: match faces in images against a tenant's watchlist offline."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from citystream.cli import config_option, fail, print_json, settings_of
from citystream.processors.watchlists import watchlists


@click.group()
def faces() -> None:
    """Face matching against watchlists (only hits are reported, never templates)."""


@faces.command("match")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--tenant", required=True, help="Whose watchlist to match against.")
@click.option("--threshold", type=float, default=None, help="Euclidean distance (default worker.face_threshold).")
@click.option("--upsample", type=int, default=None, help="dlib HOG upsampling (default worker.face_upsample).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image per line.")
@config_option
@click.pass_context
def match(ctx: click.Context, images: tuple[str, ...], tenant: str, threshold: float | None, upsample: int | None,
          as_json: bool, config: str | None) -> None:
    """Report, per image, how many faces it shows and which of them are on the watchlist."""
    import cv2

    from citystream.processors.faces.faces import analyse_faces

    settings = settings_of(ctx)
    limit = threshold if threshold is not None else settings.worker.face_threshold
    up = upsample if upsample is not None else settings.worker.face_upsample
    try:
        index = watchlists.WatchlistIndex.build(watchlists.read_all(settings).values())
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    entries, templates = index.face_templates(tenant, datetime.now(UTC))
    failed = False
    for image in images:
        bgr = cv2.imread(image, cv2.IMREAD_COLOR)
        if bgr is None:
            click.echo(f"citystream: cannot read image {image}", err=True)
            failed = True
            continue
        count, hits = analyse_faces(bgr, templates, limit, up)
        matches = [{"entry_id": entries[h.index].entry_id, "label": entries[h.index].label,
                    "distance": round(h.distance, 4), "bbox": list(h.bbox)} for h in hits]
        if as_json:
            print_json({"image": image, "faces": count, "matches": matches})
        else:
            click.echo(f"{image}: {count} face(s), {len(matches)} match(es)")
            for m in matches:
                click.echo(f"  {m['entry_id']}  {m['label']}  distance={m['distance']}  bbox={m['bbox']}")
    if failed:
        raise SystemExit(1)
