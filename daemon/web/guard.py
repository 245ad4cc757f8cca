"""Who may talk to the web workspace: Host header, token and same-origin checks, before any route runs.

- The Host header must name this server (loopback names, the bound address, `web_allowed_hosts`), so a
  web page whose DNS name was rebound to 127.0.0.1 gets nothing.
- With a token (required off loopback), every request carries it: `Authorization: Bearer <token>`, or the
  cookie set when the page is opened as `/?token=<token>` (HttpOnly, SameSite=Strict).
- A request that changes something (anything but GET/HEAD) needs the token in the Authorization header,
  or must come from the page itself: its Origin (or Sec-Fetch-Site) says same origin.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "hotshot_token"
SAFE_METHODS = ("GET", "HEAD")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str, extra: list[str]) -> set[str]:
    """Host names this server answers to: loopback, the bound address and, when bound to every interface,
    this machine's names; plus the `web_allowed_hosts` setting."""
    hosts = {*LOOPBACK_NAMES, bind_host.strip("[]").lower(), *(name.lower() for name in extra)}
    if bind_host in ("0.0.0.0", "::", ""):
        hosts |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        try:
            hosts |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
    return hosts


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware applying the checks above to every HTTP request."""

    def __init__(self, app: ASGIApp, hosts: set[str], token: str | None) -> None:
        self.app = app
        self.hosts = {host.strip("[]") for host in hosts}
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        host = headers.get("host", "")
        if _host_name(host) not in self.hosts:
            response = PlainTextResponse(f"this server does not answer to Host {host!r}; open it by its own "
                                         "address (or add the name to web_allowed_hosts)", status_code=421)
            await response(scope, receive, send)
            return
        bearer = self._bearer(headers)
        if self.token is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            offered = query.get("token", [None])[0]
            if scope["path"] == "/" and offered is not None and hmac.compare_digest(offered, self.token):
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
                await response(scope, receive, send)
                return
            if not bearer and not self._cookie(headers):
                response = PlainTextResponse("this workspace needs its token: open /?token=<token> once "
                                             "(web_token setting or HOTSHOT_WEB_TOKEN)", status_code=401)
                await response(scope, receive, send)
                return
        if scope["method"] not in SAFE_METHODS and not bearer and not self._same_origin(headers, host):
            response = PlainTextResponse("refused: a change must come from the workspace page itself "
                                         "(same origin) or carry the token", status_code=403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _bearer(self, headers: dict[str, str]) -> bool:
        value = headers.get("authorization", "")
        return (self.token is not None and value.startswith("Bearer ")
                and hmac.compare_digest(value[7:].strip(), self.token))

    def _cookie(self, headers: dict[str, str]) -> bool:
        jar = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no token
            return False
        morsel = jar.get(COOKIE)
        return morsel is not None and self.token is not None and hmac.compare_digest(morsel.value, self.token)

    @staticmethod
    def _same_origin(headers: dict[str, str], host: str) -> bool:
        origin = headers.get("origin")
        if origin:
            parts = urlsplit(origin)
            return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()
        return headers.get("sec-fetch-site") == "same-origin"
