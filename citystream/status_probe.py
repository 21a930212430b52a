"""Where the pipeline's processes serve ``/metrics`` and what their endpoints say (for ``citystream status``).

Targets come from ``--target STAGE=URL`` or, on the machine itself, from the running processes: every
``citystream bridge|worker|sink`` whose settings file is the one ``status`` reads (``--config``,
``CITYSTREAM_CONFIG`` or ``.citystream/citystream.yaml`` of its working directory), with the metrics
port of its environment (``CITYSTREAM_METRICS__PORT``, as the demo and chaos runs set it) or of that
file (``metrics.port``). Processes of other users cannot be read and are not listed. A scrape reads
``/readyz`` (ready or not, and the readiness gauges) and ``/metrics`` (every sample, for rates).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

STAGES = ("bridge", "worker", "sink")
Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass(frozen=True)
class Target:
    """One stage process's metrics endpoint (``url`` without a path), and its pid when found locally."""

    stage: str
    url: str
    pid: int | None = None


def parse_target(text: str) -> Target:
    """``STAGE=URL`` (``bridge=http://bridge:9100``) as a Target; ValueError names what is wrong."""
    stage, sep, url = text.partition("=")
    if not sep or stage not in STAGES:
        raise ValueError(f"expected STAGE=URL with STAGE one of {', '.join(STAGES)}, got {text!r}")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the URL of {stage} must start with http:// or https://, got {url!r}")
    return Target(stage, url.rstrip("/"))


def stage_command(argv: list[str]) -> tuple[str, str | None] | None:
    """(stage, --config value) when ``argv`` runs ``citystream bridge|worker|sink``, else None."""
    for i, arg in enumerate(argv):
        if (arg == "citystream" and i > 0 and argv[i - 1] == "-m") or Path(arg).name == "citystream":
            rest = argv[i + 1:]
            break
    else:
        return None
    stage, config, j = None, None, 0
    while j < len(rest):
        token = rest[j]
        if token in ("--config", "-c"):
            config = rest[j + 1] if j + 1 < len(rest) else None
            j += 2
            continue
        if token.startswith("--config="):
            config = token.split("=", 1)[1]
        elif not token.startswith("-") and stage is None:
            if token not in STAGES:
                return None
            stage = token
        j += 1
    return (stage, config) if stage is not None else None


def _read(path: Path) -> list[str]:
    return [part.decode(errors="replace") for part in path.read_bytes().split(b"\0") if part]


def _config_of(proc: Path, config: str | None, env: dict[str, str]) -> Path | None:
    cwd = (proc / "cwd").resolve()
    if config or env.get("CITYSTREAM_CONFIG"):
        return (cwd / (config or env["CITYSTREAM_CONFIG"])).resolve()
    default = cwd / ".citystream" / "citystream.yaml"
    return default.resolve() if default.is_file() else None


def _metrics_address(config: Path | None, env: dict[str, str]) -> tuple[str, int]:
    section: dict[str, object] = {}
    if config is not None:
        try:
            section = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("metrics") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            section = {}
    host = env.get("CITYSTREAM_METRICS__HOST") or str(section.get("host") or "127.0.0.1")
    try:
        port = int(env.get("CITYSTREAM_METRICS__PORT") or section.get("port") or 0)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        port = 0
    return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), port


def discover(config: Path | None, proc_root: Path = Path("/proc")) -> tuple[list[Target], list[str]]:
    """Local stage processes using the settings file ``config``: their targets, and notes on those without one."""
    wanted = config.resolve() if config is not None else None
    targets: dict[str, Target] = {}
    notes: list[str] = []
    for proc in sorted(proc_root.iterdir(), key=lambda p: p.name):
        if not proc.name.isdigit():
            continue
        try:
            found = stage_command(_read(proc / "cmdline"))
            if found is None:
                continue
            env = dict(item.split("=", 1) for item in _read(proc / "environ") if "=" in item)
            used = _config_of(proc, found[1], env)
        except OSError:  # gone, or another user's process
            continue
        if used != wanted:
            continue
        host, port = _metrics_address(used, env)
        if port == 0:
            notes.append(f"{found[0]} pid {proc.name} serves no metrics (metrics.port is 0)")
            continue
        url = f"http://{host}:{port}"
        targets.setdefault(url, Target(found[0], url, int(proc.name)))  # forked children share the parent's port
    return list(targets.values()), notes


@dataclass
class Scrape:
    """What one target answered: readiness, every metric sample, or why it could not be read."""

    target: Target
    at: float
    ready: bool = False
    gauges: dict[str, float] = field(default_factory=dict)
    samples: Samples = field(default_factory=dict)
    error: str | None = None


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(target: Target, timeout: float = 3.0) -> Scrape:
    """Read ``/readyz`` and ``/metrics`` of a target (never raises: failures land in ``error``)."""
    result = Scrape(target, time.monotonic())
    try:
        code, body = _get(f"{target.url}/readyz", timeout)
        doc = orjson.loads(body) if code in (200, 503) else {}
        result.ready = code == 200
        result.gauges = {str(k): float(v) for k, v in dict(doc.get("gauges") or {}).items()}
        code, body = _get(f"{target.url}/metrics", timeout)
        if code != 200:
            raise OSError(f"/metrics answered HTTP {code}")
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                result.samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    except (OSError, ValueError) as exc:
        result.ready = False
        result.error = f"unreachable: {getattr(exc, 'reason', None) or exc}"
    return result


def total(scrapes: Iterable[Scrape], name: str, **labels: str) -> float:
    """Sum of a sample over scrapes, keeping those whose labels include ``labels``."""
    return sum(value for s in scrapes for found, value in s.samples.get(name, ())
               if all(found.get(k) == v for k, v in labels.items()))


def rate(before: list[Scrape], after: list[Scrape], names: Iterable[str]) -> float | None:
    """Per-second increase of counters between two rounds of scrapes of the same targets (None: no interval)."""
    rates = []
    earlier = {s.target.url: s for s in before if s.error is None}
    for now in after:
        then = earlier.get(now.target.url)
        if now.error is not None or then is None or now.at <= then.at:
            continue
        delta = sum(total([now], n) - total([then], n) for n in names)
        if delta < 0:  # restarted between the scrapes: count from zero
            delta = sum(total([now], n) for n in names)
        rates.append(delta / (now.at - then.at))
    return sum(rates) if rates else None


def buckets(scrapes: Iterable[Scrape], name: str) -> dict[float, float]:
    """Cumulative histogram buckets (``le`` -> count) of ``name``, summed over every series and scrape."""
    found: dict[float, float] = {}
    for s in scrapes:
        for labels, value in s.samples.get(f"{name}_bucket", ()):
            le = float(labels["le"])
            found[le] = found.get(le, 0.0) + value
    return found


def quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus-style ``histogram_quantile`` over cumulative buckets (None without observations)."""
    edges = sorted(cumulative)
    if not edges or cumulative[edges[-1]] <= 0:
        return None
    rank = q * cumulative[edges[-1]]
    lower_edge, lower_count = 0.0, 0.0
    for edge in edges:
        count = cumulative[edge]
        if count >= rank:
            if edge == float("inf"):
                return lower_edge
            if count == lower_count:
                return edge
            return lower_edge + (edge - lower_edge) * (rank - lower_count) / (count - lower_count)
        lower_edge, lower_count = edge, count
    return lower_edge

