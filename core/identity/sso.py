"""Single sign-on: OAuth 2.0 / OpenID Connect authorization-code login with state and PKCE.

Providers: GitHub (an OAuth app, GITHUB_CLIENT_ID/SECRET) and any OpenID Connect issuer found by
discovery (OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET). The flow:

1. `start_login` makes a PKCE verifier (kept by the browser in an HttpOnly cookie, never in a
   URL), a nonce, and a short-lived `state`: an HS256 token signed with JWT_SECRET (typ
   `sso_state`) naming the provider, the nonce, the verifier's S256 challenge and an optional
   relative `return_to`. The browser is sent to the provider's authorization endpoint.
2. The provider sends the browser back to `<public url>/auth/sso/<provider>/callback` with a
   `code` and the `state`. `SsoService.complete` checks the state (signature, expiry, provider)
   and that the browser's cookie holds the verifier of its challenge (so a code and state
   copied from someone else's browser are useless), exchanges the code with the verifier, and
   gets the account's subject and verified e-mail: GitHub's user and /user/emails APIs (only
   the primary, verified address counts), or an OIDC ID token whose signature (JWKS), `iss`,
   `aud`, `exp` and `nonce` are verified, with `email_verified` true.
3. The provider's answer must pass the allow-list (SSO_ALLOWED_EMAIL_DOMAINS; for GitHub,
   GITHUB_ALLOWED_ORGS, checked with GitHub's membership API; for OIDC the issuer is pinned to
   OIDC_ISSUER). The user is found by the stored identity (provider, subject), else created
   without a password. An account is never matched by e-mail alone: when the verified e-mail
   belongs to an existing account that is not linked to this provider account, the login is
   refused (409 `sso_account_exists`) and its owner links it explicitly, signed in, with
   `POST /auth/sso/{provider}/link` (the state then names the signed-in user).
4. `AuthService.login_sso` issues the platform's token pair (a disabled or deleted account is
   refused; the password lock does not apply). A privileged user (`is_privileged`) with MFA
   on gets a short-lived `mfa_token` instead, redeemed with a TOTP or recovery code at
   `POST /auth/sso/mfa` (`SsoService.complete_mfa`).

Provider calls use one `httpx.AsyncClient` per login with a timeout; `SsoRegistry` takes an
optional transport so tests can answer them without a network.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import httpx
import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import __version__, context
from core.audit import AuditService
from core.db.types import utcnow
from core.errors import AppError, BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from core.identity.auth import AuthService, TokenPair, TokenPolicy, is_privileged
from core.identity.grants import load_grants
from core.identity.users import UserService, normalise_email
from core.models.identity import User, UserIdentity
from core.security.tokens import ALGORITHM, ISSUER
from core.settings import Settings

STATE_TYPE = "sso_state"
STATE_TTL = timedelta(minutes=10)
MFA_TOKEN_TYPE = "sso_mfa"
MFA_TOKEN_TTL = timedelta(minutes=5)
VERIFIER_COOKIE = "idp_sso_verifier"
HTTP_TIMEOUT = httpx.Timeout(10.0)
METADATA_TTL = 3600.0  # seconds a discovery document and its JWKS are reused
CLOCK_LEEWAY = 60  # seconds of clock skew tolerated on ID token times
GITHUB_SCOPES = "read:user user:email"
GITHUB_ORG_SCOPE = "read:org"  # asked for only when GITHUB_ALLOWED_ORGS is set
# Asymmetric algorithms only: an ID token is never accepted with HS* (the client secret as
# key) or `none`.
ID_TOKEN_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_RETURN_TO_MAX = 512
_SUBJECT_MAX = 255  # user_identities.subject


class ProviderUnavailable(AppError):
    """The provider could not be reached or answered something that is not its protocol."""

    status_code = 502
    code = "sso_provider_unavailable"


def _bad_state(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_sso_state")


# -- PKCE, state, return_to ------------------------------------------------------------------
def new_pkce_verifier() -> str:
    """A PKCE code verifier: 64 characters from the unreserved set (RFC 7636 section 4.1)."""
    return secrets.token_urlsafe(48)


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of `verifier`: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def safe_return_to(value: str | None) -> str | None:
    """`value` if it is a path on this site (`/services?x=1`), else a 400: never a URL that
    would send the user elsewhere (`https://...`, `//host`, `/\\host`)."""
    if not value:
        return None
    parts = urlsplit(value)
    if (
        len(value) > _RETURN_TO_MAX
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or parts.scheme
        or parts.netloc
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
    ):
        raise BadRequest(
            "return_to must be a path on this site, like /services (not a URL)",
            details={"field": "return_to"},
        )
    return value


@dataclass(frozen=True)
class SsoState:
    provider: str
    nonce: str
    code_challenge: str
    return_to: str | None
    link_user_id: uuid.UUID | None = None  # an explicit link by this signed-in user


def issue_state(
    secret: str,
    provider: str,
    *,
    nonce: str,
    code_challenge: str,
    return_to: str | None = None,
    link_user_id: uuid.UUID | None = None,
    ttl: timedelta = STATE_TTL,
) -> str:
    now = utcnow()
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "typ": STATE_TYPE,
        "provider": provider,
        "nonce": nonce,
        "pkce": code_challenge,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    if return_to:
        claims["return_to"] = return_to
    if link_user_id:
        claims["link"] = str(link_user_id)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_state(secret: str, token: str, provider: str) -> SsoState:
    """Verify a state token's signature, expiry, type and provider; any failure is a 400."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise _bad_state(
            "the login took too long (the state has expired); start the login again"
        ) from None
    except jwt.InvalidTokenError:
        raise _bad_state(
            "the state parameter is not valid (altered or not issued here); start the login again"
        ) from None
    if claims.get("typ") != STATE_TYPE or not all(
        isinstance(claims.get(k), str) for k in ("provider", "nonce", "pkce")
    ):
        raise _bad_state("the state parameter is not an SSO state; start the login again")
    if claims["provider"] != provider:
        raise _bad_state(
            f"the state was issued for provider {claims['provider']!r}, not {provider!r}"
        )
    return_to = claims.get("return_to")
    link = claims.get("link")
    try:
        link_user_id = uuid.UUID(link) if isinstance(link, str) else None
    except ValueError:
        raise _bad_state("the state parameter is not an SSO state; start the login again") from None
    return SsoState(
        provider=claims["provider"],
        nonce=claims["nonce"],
        code_challenge=claims["pkce"],
        return_to=return_to if isinstance(return_to, str) else None,
        link_user_id=link_user_id,
    )


def issue_mfa_token(
    secret: str, user_id: uuid.UUID, provider: str, return_to: str | None = None
) -> tuple[str, datetime]:
    """What an SSO login of a privileged user with MFA on gets instead of tokens: proof that
    the provider vouched for `user_id`, redeemed with a code at POST /auth/sso/mfa."""
    now = utcnow()
    expires = now + MFA_TOKEN_TTL
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "typ": MFA_TOKEN_TYPE,
        "sub": str(user_id),
        "provider": provider,
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": uuid.uuid4().hex,
    }
    if return_to:
        claims["return_to"] = return_to
    return jwt.encode(claims, secret, algorithm=ALGORITHM), expires


def decode_mfa_token(secret: str, token: str) -> tuple[uuid.UUID, str, str | None]:
    """(user id, provider, return_to) of a valid `mfa_token`; any failure is a 401."""
    refused = Unauthorized(
        "the mfa_token is not valid or has expired; sign in with SSO again",
        code="invalid_mfa_token",
    )
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "sub", "jti"]},
        )
        if claims.get("typ") != MFA_TOKEN_TYPE or not isinstance(claims.get("provider"), str):
            raise refused
        user_id = uuid.UUID(str(claims["sub"]))
    except (jwt.InvalidTokenError, ValueError):
        raise refused from None
    return_to = claims.get("return_to")
    return user_id, claims["provider"], return_to if isinstance(return_to, str) else None


# -- providers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SsoProfile:
    """What a provider says about the account that logged in."""

    subject: str  # stable id at the provider (never a renameable login name)
    email: str | None
    email_verified: bool
    name: str | None = None
    avatar_url: str | None = None


class SsoProvider(Protocol):
    name: str  # in URLs and in user_identities.provider
    kind: str  # github | oidc
    label: str  # for people: "GitHub", "OpenID Connect (https://issuer)"

    async def authorization_url(
        self,
        http: httpx.AsyncClient,
        *,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        nonce: str,
    ) -> str: ...

    async def authenticate(
        self,
        http: httpx.AsyncClient,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str,
    ) -> SsoProfile: ...


def _with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


async def _call(
    http: httpx.AsyncClient, label: str, what: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    try:
        return await http.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise ProviderUnavailable(f"{label} did not answer the {what} request in time") from None
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(
            f"{label} is not reachable for the {what} request ({type(exc).__name__})",
            details={"url": url},
        ) from None


def _json(response: httpx.Response, label: str, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ProviderUnavailable(
            f"{label} answered the {what} request with HTTP {response.status_code} "
            "and a body that is not JSON"
        ) from None


def _expect_ok(response: httpx.Response, label: str, what: str) -> Any:
    body = _json(response, label, what)
    if response.status_code != 200:
        raise ProviderUnavailable(
            f"{label} answered the {what} request with HTTP {response.status_code}",
            details={"response": body if isinstance(body, dict) else None},
        )
    return body


def _code_rejected(label: str, body: Any) -> Unauthorized:
    error = body.get("error") if isinstance(body, dict) else None
    description = body.get("error_description") if isinstance(body, dict) else None
    reason = f"{error}: {description}" if description else str(error or "no reason given")
    return Unauthorized(
        f"{label} refused the authorization code ({reason}); start the login again",
        code="sso_code_rejected",
        details={"error": error, "error_description": description},
    )


class GitHubProvider:
    kind = "github"
    label = "GitHub"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        oauth_base_url: str = "https://github.com",
        api_base_url: str = "https://api.github.com",
        name: str = "github",
        allowed_orgs: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.client_id = client_id
        self._client_secret = client_secret
        self.oauth_base_url = oauth_base_url.rstrip("/")
        self.api_base_url = api_base_url.rstrip("/")
        self.allowed_orgs = tuple(o.lower() for o in allowed_orgs)
        self.scopes = GITHUB_SCOPES + (f" {GITHUB_ORG_SCOPE}" if self.allowed_orgs else "")

    async def authorization_url(
        self,
        http: httpx.AsyncClient,
        *,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        nonce: str,
    ) -> str:
        return _with_query(
            f"{self.oauth_base_url}/login/oauth/authorize",
            {
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.scopes,
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            },
        )

    async def authenticate(
        self,
        http: httpx.AsyncClient,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str,
    ) -> SsoProfile:
        response = await _call(
            http,
            self.label,
            "token",
            "POST",
            f"{self.oauth_base_url}/login/oauth/access_token",
            data={
                "client_id": self.client_id,
                "client_secret": self._client_secret,
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            },
            headers={"Accept": "application/json"},
        )
        body = _json(response, self.label, "token")
        # GitHub reports a refused code with HTTP 200 and an `error` field.
        if not isinstance(body, dict) or body.get("error") or response.status_code >= 400:
            if response.status_code >= 500:
                raise ProviderUnavailable(
                    f"GitHub answered the token request with HTTP {response.status_code}"
                )
            raise _code_rejected(self.label, body)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ProviderUnavailable("GitHub's token response holds no access_token")
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        user = _expect_ok(
            await _call(
                http, self.label, "user", "GET", f"{self.api_base_url}/user", headers=headers
            ),
            self.label,
            "user",
        )
        emails = _expect_ok(
            await _call(
                http,
                self.label,
                "e-mail",
                "GET",
                f"{self.api_base_url}/user/emails",
                headers=headers,
            ),
            self.label,
            "e-mail",
        )
        if not isinstance(user, dict) or not isinstance(user.get("id"), int | str):
            raise ProviderUnavailable("GitHub's /user answer holds no account id")
        if self.allowed_orgs:
            await self._check_membership(http, headers)
        if not isinstance(emails, list):
            raise ProviderUnavailable("GitHub's /user/emails answer is not a list")
        primary = next(
            (e for e in emails if isinstance(e, dict) and e.get("primary") is True), None
        )
        email = primary.get("email") if primary else None
        return SsoProfile(
            subject=str(user["id"]),
            email=email if isinstance(email, str) else None,
            email_verified=bool(primary and primary.get("verified") is True),
            name=(user.get("name") or user.get("login") or None),
            avatar_url=user.get("avatar_url") or None,
        )

    async def _check_membership(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        for org in self.allowed_orgs:
            if await _github_member_of(self, http, headers, org):
                return
        raise Forbidden(
            "this GitHub account is not an active member of an organization allowed to sign in "
            f"here ({', '.join(self.allowed_orgs)}); if it is, grant this app access to the "
            "organization on GitHub",
            code="sso_not_allowed",
            details={"allowed_orgs": list(self.allowed_orgs)},
        )


async def _github_member_of(
    provider: GitHubProvider, http: httpx.AsyncClient, headers: dict[str, str], org: str
) -> bool:
    """GitHub's "get an organization membership for the authenticated user": 200 with
    state `active` for a member; 404 (or 403 when the org restricts OAuth apps) otherwise."""
    url = f"{provider.api_base_url}/user/memberships/orgs/{quote(org, safe='')}"
    response = await _call(
        http, provider.label, "organization membership", "GET", url, headers=headers
    )
    if response.status_code in (403, 404):
        return False
    body = _expect_ok(response, provider.label, "organization membership")
    return isinstance(body, dict) and body.get("state") == "active"


@dataclass(frozen=True)
class OidcMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_auth_methods: tuple[str, ...]
    signing_algorithms: frozenset[str]


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


def _truthy(value: Any) -> bool:
    """`email_verified` is a boolean; some issuers send the string "true"."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


@dataclass
class _Cached:
    value: Any
    at: float = field(default_factory=time.monotonic)

    def fresh(self) -> bool:
        return time.monotonic() - self.at < METADATA_TTL


class OidcProvider:
    kind = "oidc"

    def __init__(
        self,
        name: str,
        issuer: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        scopes: str = "openid email profile",
    ) -> None:
        self.name = name
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        words = scopes.split()
        self.scopes = " ".join(words if "openid" in words else ["openid", *words])
        self.label = f"OpenID provider {self.issuer}"
        self._metadata: _Cached | None = None
        self._jwks: _Cached | None = None

    # discovery and keys -----------------------------------------------------------------
    async def metadata(self, http: httpx.AsyncClient) -> OidcMetadata:
        if self._metadata is not None and self._metadata.fresh():
            meta: OidcMetadata = self._metadata.value
            return meta
        url = f"{self.issuer}/.well-known/openid-configuration"
        doc = _expect_ok(
            await _call(http, self.label, "discovery", "GET", url), self.label, "discovery"
        )
        if not isinstance(doc, dict):
            raise ProviderUnavailable(f"the discovery document at {url} is not a JSON object")
        missing = [
            k
            for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
            if not isinstance(doc.get(k), str)
        ]
        if missing:
            raise ProviderUnavailable(f"the discovery document at {url} lacks {', '.join(missing)}")
        if doc["issuer"].rstrip("/") != self.issuer:
            raise ProviderUnavailable(
                f"the discovery document at {url} names issuer {doc['issuer']!r}, not "
                f"{self.issuer!r}: check OIDC_ISSUER"
            )
        for k in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint"):
            if doc.get(k) is not None and not _is_http_url(doc[k]):
                raise ProviderUnavailable(f"the discovery document's {k} is not an http(s) URL")
        algorithms = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
        meta = OidcMetadata(
            issuer=doc["issuer"],
            authorization_endpoint=doc["authorization_endpoint"],
            token_endpoint=doc["token_endpoint"],
            jwks_uri=doc["jwks_uri"],
            userinfo_endpoint=doc.get("userinfo_endpoint"),
            token_auth_methods=tuple(
                doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
            ),
            signing_algorithms=frozenset(a for a in algorithms if a in ID_TOKEN_ALGORITHMS),
        )
        self._metadata = _Cached(meta)
        return meta

    async def _keys(
        self, http: httpx.AsyncClient, meta: OidcMetadata, *, refresh: bool
    ) -> list[Any]:
        if not refresh and self._jwks is not None and self._jwks.fresh():
            keys: list[Any] = self._jwks.value
            return keys
        body = _expect_ok(
            await _call(http, self.label, "JWKS", "GET", meta.jwks_uri), self.label, "JWKS"
        )
        found = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(found, list):
            raise ProviderUnavailable(f"the JWKS at {meta.jwks_uri} holds no keys list")
        keys = [k for k in found if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        self._jwks = _Cached(keys)
        return keys

    async def _signing_key(
        self, http: httpx.AsyncClient, meta: OidcMetadata, kid: Any, algorithm: str
    ) -> jwt.PyJWK:
        for refresh in (False, True):  # an unknown kid: the issuer may have rotated its keys
            keys = await self._keys(http, meta, refresh=refresh)
            candidates = [k for k in keys if kid is None or k.get("kid") == kid]
            candidates = [k for k in candidates if k.get("alg") in (None, algorithm)]
            for candidate in candidates:
                try:
                    return jwt.PyJWK(candidate, algorithm=algorithm)
                except jwt.PyJWTError:
                    continue
        raise _invalid_id_token(f"no key in the issuer's JWKS matches its key id {kid!r}")

    # the flow ----------------------------------------------------------------------------
    async def authorization_url(
        self,
        http: httpx.AsyncClient,
        *,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        nonce: str,
    ) -> str:
        meta = await self.metadata(http)
        return _with_query(
            meta.authorization_endpoint,
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            },
        )

    async def authenticate(
        self,
        http: httpx.AsyncClient,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str,
    ) -> SsoProfile:
        meta = await self.metadata(http)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {"Accept": "application/json"}
        if self._client_secret is None:  # a public client: PKCE alone
            form["client_id"] = self.client_id
        elif "client_secret_basic" in meta.token_auth_methods:
            # RFC 6749 section 2.3.1: both parts form-encoded before Basic encoding
            pair = f"{quote(self.client_id, safe='')}:{quote(self._client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = self._client_secret
        response = await _call(
            http, self.label, "token", "POST", meta.token_endpoint, data=form, headers=headers
        )
        body = _json(response, self.label, "token")
        if response.status_code >= 500:
            raise ProviderUnavailable(
                f"{self.label} answered the token request with HTTP {response.status_code}"
            )
        if response.status_code != 200 or not isinstance(body, dict) or body.get("error"):
            raise _code_rejected(self.label, body)
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderUnavailable(
                f"{self.label} returned no ID token: is `openid` among OIDC_SCOPES?"
            )
        claims = await self._verify_id_token(http, meta, id_token, nonce)
        if "email" not in claims and meta.userinfo_endpoint and body.get("access_token"):
            claims = {
                **await self._userinfo(http, meta, str(body["access_token"]), claims),
                **claims,
            }
        email = claims.get("email")
        picture = claims.get("picture")
        return SsoProfile(
            subject=str(claims["sub"]),
            email=email if isinstance(email, str) else None,
            email_verified=_truthy(claims.get("email_verified")),
            name=str(claims.get("name") or claims.get("preferred_username") or "") or None,
            avatar_url=picture if isinstance(picture, str) else None,
        )

    async def _verify_id_token(
        self, http: httpx.AsyncClient, meta: OidcMetadata, token: str, nonce: str
    ) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid_id_token("it is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in (meta.signing_algorithms or ID_TOKEN_ALGORITHMS):
            raise _invalid_id_token(f"it is signed with {algorithm!r}, which is not accepted")
        key = await self._signing_key(http, meta, header.get("kid"), str(algorithm))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=self.client_id,
                issuer=meta.issuer,
                leeway=CLOCK_LEEWAY,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid_id_token("it has expired (check the clocks)") from None
        except jwt.InvalidAudienceError:
            raise _invalid_id_token("it was issued to another client (aud)") from None
        except jwt.InvalidIssuerError:
            raise _invalid_id_token(f"its issuer (iss) is not {meta.issuer}") from None
        except jwt.InvalidSignatureError:
            raise _invalid_id_token("its signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise _invalid_id_token(str(exc)) from None
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
            raise _invalid_id_token("it names several audiences but azp is not this client")
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise _invalid_id_token("its nonce does not match this login (a replayed token?)")
        return claims

    async def _userinfo(
        self, http: httpx.AsyncClient, meta: OidcMetadata, access_token: str, claims: dict[str, Any]
    ) -> dict[str, Any]:
        assert meta.userinfo_endpoint is not None
        info = _expect_ok(
            await _call(
                http,
                self.label,
                "userinfo",
                "GET",
                meta.userinfo_endpoint,
                headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            ),
            self.label,
            "userinfo",
        )
        if not isinstance(info, dict) or str(info.get("sub")) != str(claims["sub"]):
            raise _invalid_id_token("the userinfo answer is for another subject")
        return info


def _invalid_id_token(reason: str) -> Unauthorized:
    return Unauthorized(f"the provider's ID token is not valid: {reason}", code="invalid_id_token")


# -- the registry ----------------------------------------------------------------------------
class SsoRegistry:
    """The configured providers, and the HTTP client settings used to talk to them."""

    def __init__(
        self,
        providers: list[SsoProvider],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = HTTP_TIMEOUT,
        allowed_email_domains: tuple[str, ...] = (),
    ) -> None:
        self.providers = {p.name: p for p in providers}
        self.transport = transport
        self.timeout = timeout
        self.allowed_email_domains = tuple(d.lower() for d in allowed_email_domains)

    def check_email_domain(self, email: str) -> None:
        """SSO_ALLOWED_EMAIL_DOMAINS (empty: any domain)."""
        domain = email.rpartition("@")[2].lower()
        if self.allowed_email_domains and domain not in self.allowed_email_domains:
            raise Forbidden(
                f"e-mail addresses at {domain} may not sign in here with SSO "
                f"(allowed: {', '.join(self.allowed_email_domains)})",
                code="sso_not_allowed",
                details={"allowed_email_domains": list(self.allowed_email_domains)},
            )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> SsoRegistry:
        providers: list[SsoProvider] = []
        if settings.github_client_id and settings.github_client_secret:
            providers.append(
                GitHubProvider(
                    settings.github_client_id,
                    settings.github_client_secret.get_secret_value(),
                    oauth_base_url=settings.github_oauth_base_url,
                    api_base_url=settings.github_api_base_url,
                    allowed_orgs=tuple(settings.github_allowed_orgs),
                )
            )
        if settings.oidc_issuer and settings.oidc_client_id:
            secret = settings.oidc_client_secret
            providers.append(
                OidcProvider(
                    settings.oidc_provider_name,
                    settings.oidc_issuer,
                    settings.oidc_client_id,
                    secret.get_secret_value() if secret and secret.get_secret_value() else None,
                    scopes=settings.oidc_scopes,
                )
            )
        return cls(
            providers,
            transport=transport,
            allowed_email_domains=tuple(settings.sso_allowed_email_domains),
        )

    def get(self, name: str) -> SsoProvider:
        provider = self.providers.get(name)
        if provider is None:
            configured = ", ".join(sorted(self.providers)) or "none"
            raise NotFound(
                f"SSO provider {name!r} is not configured (configured: {configured})",
                details={"provider": name},
            )
        return provider

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self.transport,
            timeout=self.timeout,
            follow_redirects=False,
            headers={"User-Agent": f"idp-platform/{__version__}"},
        )


# -- the flow --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SsoStart:
    url: str  # where to send the browser
    state: str
    code_verifier: str  # for the browser's cookie; never put in a URL


async def start_login(
    registry: SsoRegistry,
    provider_name: str,
    *,
    secret: str,
    redirect_uri: str,
    return_to: str | None = None,
    link_user_id: uuid.UUID | None = None,
) -> SsoStart:
    provider = registry.get(provider_name)
    return_to = safe_return_to(return_to)
    verifier = new_pkce_verifier()
    challenge = pkce_challenge(verifier)
    nonce = secrets.token_urlsafe(24)
    state = issue_state(
        secret,
        provider.name,
        nonce=nonce,
        code_challenge=challenge,
        return_to=return_to,
        link_user_id=link_user_id,
    )
    async with registry.client() as http:
        url = await provider.authorization_url(
            http, redirect_uri=redirect_uri, state=state, code_challenge=challenge, nonce=nonce
        )
    return SsoStart(url=url, state=state, code_verifier=verifier)


@dataclass(frozen=True)
class SsoResult:
    pair: TokenPair | None  # None: the platform's second factor is needed first
    user: User
    created: bool
    linked: bool
    return_to: str | None
    mfa_token: str | None = None
    mfa_token_expires_at: datetime | None = None


class SsoService:
    def __init__(self, session: AsyncSession, registry: SsoRegistry, policy: TokenPolicy) -> None:
        self.session = session
        self.registry = registry
        self.policy = policy
        self.audit = AuditService(session)

    async def complete(
        self,
        provider_name: str,
        *,
        redirect_uri: str,
        code: str | None,
        state: str | None,
        code_verifier: str | None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> SsoResult:
        """Finish a login at the callback. Every refusal is audited (`auth.sso.failure`) and
        changes nothing else."""
        provider = self.registry.get(provider_name)
        profile: SsoProfile | None = None
        user_id: uuid.UUID | None = None
        try:
            if error:
                reason = f"{error}: {error_description}" if error_description else error
                raise Unauthorized(
                    f"{provider.label} did not authorize the login ({reason})",
                    code="sso_provider_error",
                    details={"error": error, "error_description": error_description},
                )
            if not state:
                raise _bad_state("the state parameter is missing; start the login again")
            checked = decode_state(self.policy.secret, state, provider.name)
            if not code_verifier:
                raise _bad_state(
                    "this browser did not start the login (its SSO cookie is missing or "
                    f"expired); start again at /auth/sso/{provider.name}/login"
                )
            if not hmac.compare_digest(pkce_challenge(code_verifier), checked.code_challenge):
                raise _bad_state(
                    "the state belongs to another login than this browser's; start the login again"
                )
            if not code:
                raise BadRequest("the callback has no code parameter; start the login again")
            async with self.registry.client() as http:
                profile = await provider.authenticate(
                    http,
                    code=code,
                    redirect_uri=redirect_uri,
                    code_verifier=code_verifier,
                    nonce=checked.nonce,
                )
            if not profile.email or not profile.email_verified:
                raise Unauthorized(
                    f"{provider.label} did not confirm a verified e-mail address for this "
                    "account; verify your (primary) e-mail there and try again",
                    code="email_not_verified",
                )
            if not 0 < len(profile.subject) <= _SUBJECT_MAX:
                raise ProviderUnavailable(f"{provider.label} sent an unusable account id")
            address = normalise_email(profile.email)
            profile = replace(profile, email=address, name=(profile.name or "")[:200])
            self.registry.check_email_domain(address)
            # Everything the login changes is undone if it is refused after all.
            async with self.session.begin_nested():
                if checked.link_user_id is not None:
                    user = await self._link(provider.name, profile, checked.link_user_id)
                    created, linked = False, True
                else:
                    user, created, linked = await self._user_for(provider.name, profile)
                user_id = user.id
                if await self.needs_platform_mfa(user):
                    token, expires = issue_mfa_token(
                        self.policy.secret, user.id, provider.name, checked.return_to
                    )
                    with context.bound(actor_id=user.id, actor_type="user"):
                        await self.audit.record(
                            "auth.sso.mfa_challenge",
                            "user",
                            user.id,
                            after={"provider": provider.name},
                        )
                    return SsoResult(None, user, created, linked, checked.return_to, token, expires)
                pair = await AuthService(self.session, self.policy).login_sso(user, provider.name)
            return SsoResult(pair, user, created, linked, checked.return_to)
        except IntegrityError:  # a concurrent first login of the same account won the race
            raise Conflict(
                "this account was just set up by a concurrent login; try again"
            ) from None
        except AppError as exc:
            email = profile.email if profile else None
            with context.bound(
                actor_id=user_id,
                actor_type="user",
                actor_label=email or context.current().actor_label,
            ):
                await self.audit.record(
                    "auth.sso.failure",
                    "user",
                    user_id,
                    after={
                        "provider": provider.name,
                        "reason": exc.code,
                        "message": exc.message,
                        "subject": profile.subject if profile else None,
                        "email": email,
                    },
                )
            exc.keep_changes = True  # the audit entry; the nested block rolled back the rest
            raise

    async def needs_platform_mfa(self, user: User) -> bool:
        """A privileged user (`is_privileged`) with MFA on passes the platform's second factor
        after the provider's login too: a compromised provider account is not enough."""
        return user.mfa_enabled and is_privileged(await load_grants(self.session, user.id))

    async def complete_mfa(self, mfa_token: str, code: str) -> SsoResult:
        """The second step of a privileged user's SSO login: the code of the platform's MFA."""
        user_id, provider, return_to = decode_mfa_token(self.policy.secret, mfa_token)
        user = await UserService(self.session).get(user_id, include_deleted=True)
        auth = AuthService(self.session, self.policy)
        await auth.check_sso_second_factor(user, code)
        pair = await auth.login_sso(user, provider)
        return SsoResult(pair, user, False, False, return_to)

    async def _link(self, provider: str, profile: SsoProfile, user_id: uuid.UUID) -> User:
        """The explicit link that a signed-in user started (POST /auth/sso/{provider}/link)."""
        assert profile.email is not None
        users = UserService(self.session)
        user = await users.get(user_id, include_deleted=True)
        identity = (
            await self.session.scalars(
                select(UserIdentity).where(
                    UserIdentity.provider == provider, UserIdentity.subject == profile.subject
                )
            )
        ).first()
        now = utcnow()
        if identity is not None:
            if identity.user_id != user.id:
                raise Conflict(
                    f"this {provider} account is already linked to another user of the platform",
                    code="sso_identity_taken",
                )
            identity.email, identity.last_login_at = profile.email, now
            return user
        identity = UserIdentity(
            user_id=user.id,
            provider=provider,
            subject=profile.subject,
            email=profile.email,
            last_login_at=now,
        )
        self.session.add(identity)
        await self.session.flush()
        with context.bound(actor_id=user.id, actor_type="user", actor_label=user.email):
            await self.audit.record(
                "auth.sso.link",
                "user",
                user.id,
                after={
                    "provider": provider,
                    "subject": profile.subject,
                    "email": profile.email,
                    "identity_id": identity.id,
                    "new_user": False,
                    "explicit": True,
                },
            )
        return user

    async def _user_for(self, provider: str, profile: SsoProfile) -> tuple[User, bool, bool]:
        """The platform user of a provider account: by identity, else created without a
        password. Never matched by e-mail: an existing account with the provider's verified
        e-mail is refused (its owner links it, signed in)."""
        assert profile.email is not None
        now = utcnow()
        identity = (
            await self.session.scalars(
                select(UserIdentity).where(
                    UserIdentity.provider == provider, UserIdentity.subject == profile.subject
                )
            )
        ).first()
        users = UserService(self.session)
        if identity is not None:
            user = await users.get(identity.user_id, include_deleted=True)
            identity.email, identity.last_login_at = profile.email, now
            return user, False, False
        existing = await users.by_email(profile.email)
        if existing is not None:
            if existing.is_deleted or existing.status != "active":
                raise Unauthorized("the account is disabled", code="account_disabled")
            raise Conflict(
                f"an account with the e-mail {profile.email} already exists and is not linked "
                f"to this {provider} account: sign in to it, then link {provider} with "
                f"POST /auth/sso/{provider}/link",
                code="sso_account_exists",
                details={"provider": provider, "link": f"/auth/sso/{provider}/link"},
            )
        with context.bound(actor_id=None, actor_type="user", actor_label=profile.email):
            user = await users.create(profile.email, profile.name or "", None)
            if profile.avatar_url and len(profile.avatar_url) <= 2048:
                user.avatar_url = profile.avatar_url
            created = True
            identity = UserIdentity(
                user_id=user.id,
                provider=provider,
                subject=profile.subject,
                email=profile.email,
                last_login_at=now,
            )
            self.session.add(identity)
            await self.session.flush()
            with context.bound(actor_id=user.id):
                await self.audit.record(
                    "auth.sso.link",
                    "user",
                    user.id,
                    after={
                        "provider": provider,
                        "subject": profile.subject,
                        "email": profile.email,
                        "identity_id": identity.id,
                        "new_user": created,
                    },
                )
        return user, created, True
