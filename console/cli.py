"""``citystream console``: serve the control-room web console.

``--demo-login`` is for ``make demo`` only (see :mod:`citystream.console.demo_login`).
Exit codes: 0 after SIGTERM/SIGINT (uvicorn stops accepting, finishes open requests), 2 for bad settings,
no users configured or a port that cannot be bound, 1 for other failures.
"""

from __future__ import annotations

import getpass
import logging
import signal
import socket
import sys

import click

from citystream.cli import config_option, fail, settings_of
from citystream.console.auth import hash_password

log = logging.getLogger(__name__)


@click.command("console")
@click.option("--host", default=None, help="Listen address (default: console.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default: console.port).")
@click.option("--hash-password", "hash_only", is_flag=True,
              help="Read a password (prompt, or stdin when not a terminal), print its hash for console.users, exit.")
@click.option("--demo-login", is_flag=True,
              help="Local demo only: with no console.users, log in as 'demo' (operator) with a generated password "
                   "kept in <stack.home>/console-demo-login.json.")
@config_option
@click.pass_context
def console(ctx: click.Context, host: str | None, port: int | None, hash_only: bool, demo_login: bool,
            config: str | None) -> None:
    """Serve the control-room console: camera wall, live feed, sensors, watchlists."""
    if hash_only:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            fail("empty password", 2)
        click.echo(hash_password(password))
        return
    settings = settings_of(ctx, **{"console.host": host, "console.port": port})
    if demo_login and not settings.console.users:
        from citystream.console import demo_login as demo
        from citystream.settings.console import ConsoleUser

        user = ConsoleUser(role="operator", name="demo operator",
                           password_hash=hash_password(demo.demo_password(settings)))
        settings = settings.model_copy(update={"console": settings.console.model_copy(
            update={"users": {demo.LOGIN: user}})})
    if not settings.console.users:
        fail("no console users configured (console.users); hash a password with "
             "'citystream console --hash-password'", 2)
    import uvicorn

    from citystream.console.app import create_app

    cfg = settings.console
    sock = listen_socket(cfg.host, cfg.port)
    port = sock.getsockname()[1]
    app = create_app(settings)
    scheme = "https" if cfg.tls else "http"
    log.info("console listening", extra={"url": f"{scheme}://{cfg.host}:{port}"})
    server = uvicorn.Server(uvicorn.Config(
        app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False, lifespan="on",
        ssl_certfile=str(cfg.tls_cert_file) if cfg.tls_cert_file else None,
        ssl_keyfile=str(cfg.tls_key_file) if cfg.tls_key_file else None, timeout_graceful_shutdown=5))
    click.echo(f"console: {scheme}://{cfg.host}:{port}/", err=True)

    def stop(_sig: int, _frame: object) -> None:
        server.should_exit = True

    # uvicorn re-raises the signal that stopped it once it has shut down; with this handler in place of
    # the default, that ends in a clean return (exit 0) instead of death by SIGTERM.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    server.run(sockets=[sock])
    if not server.started:
        fail(f"could not serve on {cfg.host}:{port}")


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for the console; a taken port or bad address is a configuration error (exit 2)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        fail(f"console.port {port}: cannot serve on {host}: {exc.strerror or exc}", 2)
    return sock
