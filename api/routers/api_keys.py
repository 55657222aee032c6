"""API keys for service-to-service calls: `Authorization: Bearer idpk_...` or `X-API-Key`."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.auth import CurrentPrincipal
from api.deps import DbSession
from api.pagination import PageOut, page_params, page_response
from api.ratelimit import known_keys
from core.errors import Forbidden, NotFound
from core.identity.api_keys import ApiKeyService
from core.pagination import PageRequest
from core.security.authorization import Principal

router = APIRouter(prefix="/api-keys", tags=["api-keys"])


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    permissions: list[str] = Field(min_length=1, max_length=50)
    expires_at: AwareDatetime | None = Field(
        None, description="With a time zone (e.g. 2027-01-01T00:00:00Z); omit for no expiry"
    )


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it")
    permissions: list[str]
    expires_at: datetime | None
    last_used: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class CreatedApiKeyOut(ApiKeyOut):
    key: str = Field(description="The secret. Shown only in this response; store it now.")


def _user_only(principal: Principal) -> None:
    """Keys are managed by their users: a leaked key cannot list or revoke its siblings."""
    if principal.kind != "user":
        raise Forbidden("API keys are managed with a user login, not with an API key")


@router.post("", response_model=CreatedApiKeyOut, status_code=201, summary="Create an API key")
async def create_key(
    body: ApiKeyIn, request: Request, principal: CurrentPrincipal, session: DbSession
) -> CreatedApiKeyOut:
    created = await ApiKeyService(session).create(
        principal, body.name, body.permissions, body.expires_at
    )
    if (keys := known_keys(request.app)) is not None:
        keys.add(created.key.key_hash)  # rate-limited in a bucket of its own from the start
    out = ApiKeyOut.model_validate(created.key)
    return CreatedApiKeyOut(**out.model_dump(), key=created.secret)


@router.get("", response_model=PageOut[ApiKeyOut], summary="Your API keys (admin: anyone's)")
async def list_keys(
    request: Request,
    principal: CurrentPrincipal,
    session: DbSession,
    user_id: uuid.UUID | None = Query(None, description="Admin only: another user's keys"),
    include_revoked: bool = False,
    page: PageRequest = Depends(page_params),
) -> PageOut[ApiKeyOut]:
    _user_only(principal)
    owner = user_id or principal.user_id
    if owner != principal.user_id and not principal.can("users:admin"):
        raise Forbidden("missing permission users:admin", details={"permission": "users:admin"})
    found = await ApiKeyService(session).list(owner, page, include_revoked=include_revoked)
    return page_response(request, found, ApiKeyOut.model_validate)


@router.delete("/{key_id}", status_code=204, summary="Revoke an API key")
async def delete_key(
    key_id: uuid.UUID, request: Request, principal: CurrentPrincipal, session: DbSession
) -> Response:
    _user_only(principal)
    keys = ApiKeyService(session)
    key = await keys.get(key_id)
    if key.user_id != principal.user_id and not principal.can("users:admin"):
        raise NotFound(f"API key {key_id} not found")  # do not reveal others' keys
    await keys.revoke(key)
    if (known := known_keys(request.app)) is not None:
        known.discard(key.key_hash)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
