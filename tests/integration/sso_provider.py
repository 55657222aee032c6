"""A stand-in SSO provider for tests: a real HTTP server on 127.0.0.1 speaking the wire formats
of an OpenID Connect issuer and of GitHub's OAuth app flow and REST API.

OpenID Connect (at the root): `/.well-known/openid-configuration`, `/authorize`, `/token`,
`/jwks` (an RSA key generated when the provider is created), `/userinfo`.
GitHub: `/github/login/oauth/authorize` and `/github/login/oauth/access_token` (github.com's
paths), `/github-api/user`, `/github-api/user/emails` and
`/github-api/user/memberships/orgs/{org}` (api.github.com's; the membership answers only a
token granted the `read:org` scope, as GitHub does).

There is no login page: `/authorize` approves at once as the account named by `login_as` and
redirects to the redirect URI with `code` and `state`, as a provider does after the user has
logged in; the test follows that redirect by calling the callback itself. `/token` checks the
client credentials, the redirect URI and the PKCE verifier against the challenge, like a real
provider. Knobs (`deny`, `id_token_claims`, `foreign_key`) make it misbehave on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.standins import Running


@dataclass
class Account:
    """A user at the provider. For GitHub, `subject` is the numeric account id."""

    subject: str
    email: str
    email_verified: bool = True
    name: str = "Stand-in User"
    login: str = "stand-in"
    # GitHub only: further addresses, (email, verified); never primary
    other_emails: list[tuple[str, bool]] = field(default_factory=list)
    # GitHub only: organizations the account is an active member of
    orgs: list[str] = field(default_factory=list)


@dataclass
class Grant:
    kind: str  # oidc | github
    client_id: str
    subject: str
    redirect_uri: str
    code_challenge: str | None
    nonce: str | None
    scope: str


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def _form(request: Request) -> dict[str, Any]:
    """An application/x-www-form-urlencoded body (the token endpoints' format)."""
    if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
        return {}
    return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


class StandInProvider(Running):
    def __init__(self) -> None:
        self.client_id = "idp-test-client"
        self.client_secret = "stand-in-client-secret"
        self.github_client_id = "Iv1.standin"
        self.github_client_secret = "stand-in-github-secret"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:8]
        self.accounts: dict[str, Account] = {}
        self.login_as: str | None = None
        self.deny = False  # /authorize answers error=access_denied
        self.id_token_claims: dict[str, Any] = {}  # merged into ID tokens; None removes a claim
        self.foreign_key = False  # sign ID tokens with a key not in the JWKS (same kid)
        self.token_requests: list[dict[str, Any]] = []
        self._codes: dict[str, Grant] = {}
        self._tokens: dict[str, str] = {}
        self._scopes: dict[str, str] = {}  # GitHub access token -> the scopes granted
        self.membership_requests: list[str] = []  # the organizations asked about
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.github_oauth_url = f"{self.url}/github"
        self.github_api_url = f"{self.url}/github-api"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------------------
    def add_account(self, email: str, **kwargs: Any) -> Account:
        """A new account (subject: a fresh number, as GitHub's ids are) that logs in next."""
        subject = kwargs.pop("subject", None) or str(secrets.randbelow(10**9) + 10**8)
        account = Account(subject=subject, email=email, **kwargs)
        self.accounts[subject] = account
        self.login_as = subject
        return account

    def start(self) -> StandInProvider:
        config = uvicorn.Config(self.app(), log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in SSO provider did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/jwks", self.jwks),
                Route("/userinfo", self.userinfo),
                Route("/github/login/oauth/authorize", self.github_authorize),
                Route(
                    "/github/login/oauth/access_token", self.github_access_token, methods=["POST"]
                ),
                Route("/github-api/user", self.github_user),
                Route("/github-api/user/emails", self.github_emails),
                Route("/github-api/user/memberships/orgs/{org}", self.github_membership),
            ]
        )

    # -- OpenID Connect -------------------------------------------------------------------
    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "userinfo_endpoint": f"{self.url}/userinfo",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"],
            }
        )

    def _approve(self, request: Request, kind: str, client_id: str) -> Response:
        q = request.query_params
        if q.get("client_id") != client_id:
            return PlainTextResponse("unknown client_id", status_code=400)
        redirect_uri = q.get("redirect_uri")
        if not redirect_uri:  # a provider never redirects to an unchecked URI: an error page
            return PlainTextResponse("redirect_uri is required", status_code=400)
        state = q.get("state", "")
        challenge = q.get("code_challenge")
        if kind == "oidc":
            problem = None
            if q.get("response_type") != "code":
                problem = "response_type must be code"
            elif "openid" not in q.get("scope", "").split():
                problem = "scope must include openid"
            elif not challenge or q.get("code_challenge_method") != "S256":
                problem = "PKCE with S256 is required"
            if problem:
                query = {"error": "invalid_request", "error_description": problem, "state": state}
                return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=302)
        if self.deny or self.login_as is None:
            query = {
                "error": "access_denied",
                "error_description": "The user denied the request",
                "state": state,
            }
            return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=302)
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = Grant(
                kind=kind,
                client_id=client_id,
                subject=self.login_as,
                redirect_uri=redirect_uri,
                code_challenge=challenge,
                nonce=q.get("nonce"),
                scope=q.get("scope", ""),
            )
        return RedirectResponse(
            f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", status_code=302
        )

    async def authorize(self, request: Request) -> Response:
        return self._approve(request, "oidc", self.client_id)

    def _redeem(self, form: dict[str, Any], kind: str, client_id: str) -> Grant | str:
        """The checks of RFC 6749 section 4.1.3 and RFC 7636 section 4.6: the grant, or why
        the code is refused."""
        with self._lock:
            grant = self._codes.pop(str(form.get("code", "")), None)
        if grant is None or grant.kind != kind:
            return "the code is unknown or was already used"
        if grant.client_id != client_id:
            return "the code was issued to another client"
        if form.get("redirect_uri") != grant.redirect_uri:
            return "redirect_uri does not match the authorization request"
        verifier = form.get("code_verifier")
        if grant.code_challenge is not None and (
            not verifier or s256(str(verifier)) != grant.code_challenge
        ):
            return "PKCE verification failed"
        return grant

    async def token(self, request: Request) -> Response:
        form = await _form(request)
        auth = request.headers.get("authorization", "")
        self.token_requests.append({**form, "authorization": auth})
        if auth.lower().startswith("basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        else:
            client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        if client_id != self.client_id or secret != self.client_secret:
            return _oauth_error("invalid_client", "client authentication failed", 401)
        if form.get("grant_type") != "authorization_code":
            return _oauth_error("unsupported_grant_type", "only authorization_code")
        grant = self._redeem(form, "oidc", client_id)
        if isinstance(grant, str):
            return _oauth_error("invalid_grant", grant)
        account = self.accounts[grant.subject]
        access = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[access] = grant.subject
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": account.subject,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
            "nonce": grant.nonce,
            **self._profile(account),
        }
        for name, value in self.id_token_claims.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        key = self._foreign if self.foreign_key else self._key
        id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
                "scope": grant.scope,
            },
            headers={"Cache-Control": "no-store"},
        )

    @staticmethod
    def _profile(account: Account) -> dict[str, Any]:
        return {
            "email": account.email,
            "email_verified": account.email_verified,
            "name": account.name,
            "preferred_username": account.login,
        }

    async def jwks(self, request: Request) -> Response:
        jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        assert isinstance(jwk, dict)
        return JSONResponse({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]})

    def _bearer(self, request: Request) -> Account | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in {"bearer", "token"}:
            return None
        subject = self._tokens.get(token.strip())
        return self.accounts.get(subject) if subject else None

    async def userinfo(self, request: Request) -> Response:
        account = self._bearer(request)
        if account is None:
            return JSONResponse(
                {"error": "invalid_token"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return JSONResponse({"sub": account.subject, **self._profile(account)})

    # -- GitHub ---------------------------------------------------------------------------
    async def github_authorize(self, request: Request) -> Response:
        return self._approve(request, "github", self.github_client_id)

    async def github_access_token(self, request: Request) -> Response:
        form = await _form(request)
        self.token_requests.append(dict(form))
        as_json = "application/json" in request.headers.get("accept", "")

        def answer(body: dict[str, Any]) -> Response:  # GitHub: HTTP 200, even for errors
            if as_json:
                return JSONResponse(body)
            return PlainTextResponse(
                urlencode(body), media_type="application/x-www-form-urlencoded"
            )

        if (
            form.get("client_id") != self.github_client_id
            or form.get("client_secret") != self.github_client_secret
        ):
            return answer(
                {
                    "error": "incorrect_client_credentials",
                    "error_description": "The client_id and/or client_secret passed are incorrect.",
                }
            )
        grant = self._redeem(form, "github", self.github_client_id)
        if isinstance(grant, str):
            return answer({"error": "bad_verification_code", "error_description": grant})
        access = "gho_" + secrets.token_urlsafe(27)
        with self._lock:
            self._tokens[access] = grant.subject
            self._scopes[access] = grant.scope
        return answer({"access_token": access, "token_type": "bearer", "scope": grant.scope})

    async def github_user(self, request: Request) -> Response:
        account = self._bearer(request)
        if account is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse(
            {
                "login": account.login,
                "id": int(account.subject),
                "name": account.name,
                "avatar_url": f"https://avatars.example.com/u/{account.subject}",
                "email": None,  # the public e-mail; often unset
            }
        )

    async def github_emails(self, request: Request) -> Response:
        account = self._bearer(request)
        if account is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        emails = [
            {
                "email": account.email,
                "primary": True,
                "verified": account.email_verified,
                "visibility": "private",
            }
        ]
        emails += [
            {"email": e, "primary": False, "verified": v, "visibility": None}
            for e, v in account.other_emails
        ]
        return JSONResponse(emails)

    async def github_membership(self, request: Request) -> Response:
        account = self._bearer(request)
        if account is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        org = request.path_params["org"]
        self.membership_requests.append(org)
        token = request.headers["authorization"].partition(" ")[2].strip()
        if "read:org" not in self._scopes.get(token, "").split():
            return JSONResponse(
                {"message": "You need at least read:org scope or user scope to list your orgs."},
                status_code=403,
            )
        if org.lower() not in {o.lower() for o in account.orgs}:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        return JSONResponse(
            {
                "state": "active",
                "role": "member",
                "organization": {"login": org},
                "user": {"login": account.login, "id": int(account.subject)},
            }
        )
