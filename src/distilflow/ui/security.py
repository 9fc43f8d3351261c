"""Safe by default: who may read the dashboard and who may change a job.

- Bound to a loopback address (the default), the pages are readable from this machine only, and only under the
  names of this machine (a Host allowlist: a page of another site that rebinds its DNS name to 127.0.0.1 gets 400).
- Bound to any other address, every request needs the token (given, or generated and printed): once in the URL
  (`?token=...`, then kept in an HttpOnly SameSite=Strict cookie and dropped from the address bar) or as
  `Authorization: Bearer TOKEN`.
- Every state-changing request (cancel, resume) needs a same-origin form field derived from the token (so the
  token itself never appears in a page) and an Origin (or Referer) of this server; or the bearer token (a script's
  header, which another site cannot send without a CORS preflight this server never allows).
- Every response carries a content-security policy with no inline script and no other origin, nosniff, and no
  framing (the job's report.html is framed by its own page only, with scripts off).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "distilflow_ui_token"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# report.html is self-contained: inline styles and data: images, nothing else; only its job page may frame it.
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    token: str
    public: bool  # bound beyond loopback: every request needs the token

    @classmethod
    def for_host(cls, host: str, token: str | None) -> "Access":
        """A given token, or a new one (printed when the server starts, needed only off loopback)."""
        return cls(token=token or secrets.token_urlsafe(24), public=not is_loopback(host))

    @property
    def form_token(self) -> str:
        """What a page's forms carry: derived from the token, so a page never shows the token itself."""
        return hmac.new(self.token.encode(), b"distilflow-ui-form", hashlib.sha256).hexdigest()

    def _equal(self, given: str | None, expected: str) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    def bearer(self, headers: Headers) -> bool:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self._equal(value.strip(), self.token)

    def may_read(self, request: Request) -> bool:
        return not self.public or self.bearer(request.headers) or self._equal(request.cookies.get(COOKIE), self.token)

    def may_change(self, request: Request, form_token: str | None) -> str | None:
        """Why this state-changing request is refused (None: it may go ahead)."""
        if self.bearer(request.headers):
            return None
        if not self._equal(form_token, self.form_token):
            return "the request lacks this dashboard's form token (use the page's buttons)"
        origin = request.headers.get("origin") or _origin_of(request.headers.get("referer"))
        if origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return "the request does not come from this dashboard's own pages"
        return None


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


class Guard:
    """ASGI middleware: the token check for reads off loopback, and the security headers of every response."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.access.public and not self.access.may_read(request):
            await self._refuse_or_admit(request)(scope, receive, self._with_headers(send, scope))
            return
        await self.app(scope, receive, self._with_headers(send, scope))

    def _refuse_or_admit(self, request: Request) -> Response:
        """A token in the URL sets the cookie and is dropped from the address bar; anything else is refused."""
        given = request.query_params.get("token")
        if request.method == "GET" and given is not None and self.access._equal(given, self.access.token):
            target = request.url.remove_query_params("token")
            response = RedirectResponse(target.path + (f"?{target.query}" if target.query else ""), 303)
            response.set_cookie(COOKIE, self.access.token, httponly=True, samesite="strict")
            return response
        return PlainTextResponse("this dashboard needs its token: open the address `distilflow ui` printed (it ends "
                                 "with ?token=...), or send Authorization: Bearer TOKEN", status_code=401)

    @staticmethod
    def _with_headers(send: Send, scope: Scope) -> Send:
        report = scope["path"].endswith("/report.html")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", (REPORT_POLICY if report else PAGE_POLICY).encode()),
                            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                            (b"x-frame-options", b"SAMEORIGIN" if report else b"DENY"),
                            (b"cache-control", b"no-store")]
                message = {**message, "headers": headers}
            await send(message)

        return sending
