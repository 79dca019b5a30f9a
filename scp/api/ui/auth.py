"""Who may act on the web page: the bearer token, carried by a session cookie, and CSRF.

Reading the pages needs no token; every action (``POST /ui/actions/...``) needs

* the token: ``Authorization: Bearer TOKEN``, or the session cookie ``POST /ui/login`` set
  after the operator typed the token (HttpOnly, SameSite=Strict, path ``/ui``; its value is
  an HMAC of the token, never the token, so changing the token signs everyone out);
* the CSRF token in the form (field ``csrf``, another HMAC of the token), which only pages
  rendered for a signed-in request carry: a page of another site can neither read it nor
  compute it, and the SameSite=Strict cookie is not sent with its requests anyway;
* an ``Origin`` header, when the browser sends one, naming this host.

Without a configured ``[http] token`` actions are refused altogether: an open node must
not let any page on the network re-queue or pause forwarding.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

#: The session cookie's name.
COOKIE = "spacing_scp_ui"


class Refused(Exception):
    """An action was refused; ``status`` (401 or 403) and a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class UiAuth:
    """Checks of :mod:`scp.api.ui.auth` for one node token (empty: actions disabled)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def _mac(self, label: str) -> str:
        return hmac.new(self.token.encode(), label.encode(), hashlib.sha256).hexdigest()

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def session_value(self) -> str:
        """The session cookie's value."""
        return self._mac("spacing-scp ui session")

    def token_ok(self, token: str) -> bool:
        return self.enabled and hmac.compare_digest(token.strip().encode(), self.token.encode())

    def signed_in(self, request: Request) -> bool:
        """The request carries the token (bearer header) or a valid session cookie."""
        if not self.enabled:
            return False
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_ok(value):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session_value().encode())

    def csrf(self, request: Request) -> str | None:
        """The CSRF token for forms of this request's session (``None``: not signed in)."""
        return self._mac("spacing-scp ui csrf") if self.signed_in(request) else None

    def check_action(self, request: Request, form_csrf: str) -> None:
        """Raise :class:`Refused` unless the request may act (see the module doc)."""
        if not self.enabled:
            raise Refused(403, "actions are disabled: the node has no [http] token configured")
        if not self.signed_in(request):
            raise Refused(401, "sign in with the node's token to act")
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            raise Refused(403, "cross-origin request refused")
        expected = self._mac("spacing-scp ui csrf")
        if not hmac.compare_digest(form_csrf.encode(), expected.encode()):
            raise Refused(403, "missing or wrong CSRF token: reload the page and try again")
