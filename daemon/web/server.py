"""`hotshot web`: serve the workspace with uvicorn, refusing to listen off loopback without a token."""

from __future__ import annotations

from pathlib import Path

from daemon.config import Settings
from daemon.errors import HotshotError
from daemon.web.guard import allowed_hosts, is_loopback


def parse_bind(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8765` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise HotshotError(f"--bind {value!r} is not HOST:PORT, like 127.0.0.1:8765")
    return host.strip("[]"), int(port)


def checked_bind(settings: Settings, bind: str | None) -> tuple[str, int, str | None]:
    """The address to listen on and the token, or a refusal when a non-loopback address has no token."""
    host, port = parse_bind(bind or settings.web_bind)
    token = settings.web_token
    if not is_loopback(host) and not token:
        raise HotshotError(f"refusing to serve on {host}:{port} without a token: anyone who can reach it could "
                           "queue renders and read the shots. Set web_token (at least 16 characters) in the "
                           "settings or HOTSHOT_WEB_TOKEN, or bind to 127.0.0.1")
    return host, port, token


def serve(settings: Settings, bind: str | None, config: Path | None) -> int:
    import uvicorn

    from daemon.web.app import create_app

    host, port, token = checked_bind(settings, bind)
    app = create_app(settings, allowed_hosts(host, settings.web_allowed_hosts), token, config)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    print(f"hotshot web: {where}{'?token=<web_token>' if token else ''}  (Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False, server_header=False)
    return 0
