"""The chart's settings run: bridge, worker, sink and console started with the ConfigMap the chart renders, as in a pod.

As with the chart's ``readOnlyRootFilesystem``, each process runs in a private mount namespace
(``unshare -m``, so root is needed) where ``/`` is read-only and only two directories are writable:
its data directory (the chart's ``/var/lib/citystream`` volume) and a temp directory (``/tmp``:
``HOME`` and ``TMPDIR``). Each must become ready on ``/readyz`` and stop with exit 0 on SIGTERM; the
identity variables are set the way the StatefulSets set them (pod names). Before the chart moved every
path under the volume, the worker died with a ``PermissionError`` creating a relative ``.citystream/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from citystream.console.auth import hash_password
from citystream.settings import Settings, dump_settings
from tests.conftest import free_port
from tests.deploy.test_helm import by_kind, render

pytestmark = pytest.mark.integration

DATA_DIR = "/var/lib/citystream"
IDENTITY = {"bridge": "CITYSTREAM_BRIDGE__CLIENT_ID", "worker": "CITYSTREAM_WORKER__INSTANCE_ID",
            "sink": "CITYSTREAM_SINK__INSTANCE_ID"}
# Inside the new mount namespace: keep the two directories writable, make / read-only for this
# namespace only (a bind remount changes the mount, not the filesystem), then run the stage.
READ_ONLY_ROOT = ('data=$1; tmp=$2; shift 2; mount --bind "$data" "$data" && mount --bind "$tmp" "$tmp" '
                  '&& mount -o remount,bind,ro / && exec "$@"')


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _pod_settings(settings: Settings, data: Path) -> dict[str, Any]:
    """The chart's rendered settings, with the connection sections of the test stack and the volume in ``data``."""
    text = by_kind(render(), "ConfigMap")["cs-settings"]["data"]["citystream.yaml"]
    rendered: dict[str, Any] = yaml.safe_load(text.replace(DATA_DIR, str(data)))
    local = dump_settings(settings)
    rendered["mqtt"] = local["mqtt"]
    rendered["kafka"] = {**local["kafka"], "replication_factor": 1}  # one local broker
    rendered["clickhouse"] = {**local["clickhouse"], "dsn": f"chdb://{data}/clickhouse"}
    rendered["bridge"] = {"share_group": settings.bridge.share_group}
    rendered["sink"] = {**rendered.get("sink", {}), "group_id": settings.sink.group_id, "query_port": 0}
    rendered["worker"] = {**rendered["worker"], "app_id": f"{settings.kafka.topic_prefix}worker",
                          "vision_processes": 1, "pseudonym_keys": {"*": "test-key"}}
    return rendered


def test_the_stages_run_with_a_read_only_root_and_only_the_volumes_writable(settings: Settings,
                                                                            tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux) for a private read-only mount namespace")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    config = tmp_path / "citystream.yaml"
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        data, tmp = tmp_path / "volume", tmp_path / "tmp"
        data.mkdir()
        tmp.mkdir()
        config.write_text(yaml.safe_dump(_pod_settings(settings, data)))
        for stage in ("bridge", "worker", "sink", "console"):
            port = free_port()
            env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "TMPDIR": str(tmp),
                   "PYTHONDONTWRITEBYTECODE": "1", "CITYSTREAM_METRICS__PORT": str(port),
                   "CITYSTREAM_METRICS__HOST": "127.0.0.1"}
            if stage == "console":  # its own port and logins (the Secret's keys in the chart), no metrics port
                env.update(CITYSTREAM_CONSOLE__HOST="127.0.0.1", CITYSTREAM_CONSOLE__PORT=str(port),
                           CITYSTREAM_CONSOLE__USERS=json.dumps({"op": {"role": "operator",
                                                                          "password_hash": hash_password("pw")}}),
                           CITYSTREAM_CONSOLE__SESSION_SECRET="test-session-secret")
            else:
                env[IDENTITY[stage]] = f"cs-{stage}-0"
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", READ_ONLY_ROOT, "sh", str(data),
                    str(tmp), sys.executable, "-m", "citystream", "--config", str(config), stage]
            with open(tmp_path / f"{stage}.log", "wb") as log:  # the child keeps its own descriptor
                proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
            procs[stage] = (proc, port)
        waiting = set(procs)
        deadline = time.monotonic() + 180
        while waiting and time.monotonic() < deadline:
            for stage in sorted(waiting):
                proc, port = procs[stage]
                assert proc.poll() is None, f"{stage} exited: {(tmp_path / f'{stage}.log').read_text()[-12000:]}"
                if _status(f"http://127.0.0.1:{port}/healthz") == 200 and (
                        stage == "console" or _status(f"http://127.0.0.1:{port}/readyz") == 200):
                    waiting.discard(stage)
            time.sleep(1)
        logs = {s: (tmp_path / f"{s}.log").read_text()[-2000:] for s in waiting}
        assert not waiting, f"not ready after 180 s: {logs}"
    finally:
        codes = {}
        for proc, _port in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for stage, (proc, _port) in procs.items():
            try:
                codes[stage] = proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[stage] = proc.wait()
    assert codes == {"bridge": 0, "worker": 0, "sink": 0, "console": 0}, {
        s: (tmp_path / f"{s}.log").read_text()[-2000:] for s, c in codes.items() if c != 0}
    assert list(cwd.iterdir()) == []
    assert (data / "worker").is_dir() and (data / "clickhouse").is_dir()
    logs = "".join((tmp_path / f"{s}.log").read_text() for s in procs)
    assert "Read-only file system" not in logs and "PermissionError" not in logs
