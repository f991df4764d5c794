"""Answer the sandbox sign-in page over HTTP, for tests that drive a SMART flow without a browser.

    page = session.get(authorize_url)                      # the sandbox sign-in page
    redirect = sign_in_as(session, page, "ANALYST1")       # 302 to redirect_uri?code=...&state=...
    code = parse_qs(urlsplit(redirect.headers["Location"]).query)["code"][0]

An EHR launch (`launch=` in the authorize request) needs none of this: the
authorize endpoint redirects straight back with a code.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin

import requests


class _SignInForm(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.hidden: dict[str, str] = {}
        self.users: dict[str, str] = {}  # EHR username -> the button's value (a FHIR reference)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = values.get("action", "")
        elif tag == "input" and values.get("type") == "hidden":
            self.hidden[values.get("name", "")] = values.get("value", "")
        elif tag == "button" and values.get("name") == "user":
            self.users[values.get("data-username", "")] = values.get("value", "")


def _form(page: requests.Response) -> _SignInForm:
    form = _SignInForm()
    form.feed(page.text)
    if "request" not in form.hidden:
        raise ValueError(f"{page.url} is not the sandbox sign-in page (status {page.status_code}).")
    return form


def sign_in_as(session: requests.Session, page: requests.Response, username: str) -> requests.Response:
    """Pick the demo user with this EHR username (DRSMITH, ANALYST1, PT-ALEX...) on the sign-in page
    `page`; returns the authorize endpoint's redirect to the client, not followed.
    """
    form = _form(page)
    if username not in form.users:
        raise ValueError(f"{username} is not offered on the sign-in page; it offers {sorted(form.users)}.")
    data = {**form.hidden, "user": form.users[username]}
    return session.post(urljoin(page.url, form.action), data=data, allow_redirects=False, timeout=10)


def deny_sign_in(session: requests.Session, page: requests.Response) -> requests.Response:
    """Press Deny on the sign-in page; returns the redirect carrying error=access_denied."""
    form = _form(page)
    return session.post(
        urljoin(page.url, form.action), data={**form.hidden, "deny": "1"}, allow_redirects=False, timeout=10
    )
