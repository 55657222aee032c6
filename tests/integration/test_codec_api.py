"""The Temporal UI codec endpoints: admins read decrypted payloads; others get 403."""

from __future__ import annotations

import base64

from google.protobuf.json_format import MessageToDict
from temporalio.converter import DataConverter

from core.security.encryption import KeyRing
from core.temporal.codec import EncryptionCodec
from tests.integration.identity_helpers import Api


async def encrypted_payload(api: Api, value: object) -> dict[str, object]:
    plain = DataConverter.default.payload_converter.to_payloads([value])
    encoded = await EncryptionCodec(KeyRing.from_settings(api.settings)).encode(plain)
    return MessageToDict(encoded[0])


async def test_decode_for_admins_only(api: Api) -> None:
    payload = await encrypted_payload(api, {"db_password": "s3cr3t-codec"})
    assert "s3cr3t-codec" not in str(payload)
    _, admin = await api.token("admin")
    decoded = await api.client.post(
        "/api/temporal/codec/decode",
        json={"payloads": [payload]},
        headers={**admin, "X-Namespace": "default"},
    )
    assert decoded.status_code == 200, decoded.text
    data = base64.b64decode(decoded.json()["payloads"][0]["data"])
    assert b"s3cr3t-codec" in data

    _, viewer = await api.token("viewer")
    denied = await api.client.post(
        "/api/temporal/codec/decode", json={"payloads": [payload]}, headers=viewer
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["details"] == {"permission": "workflows:decode"}
    anonymous = await api.client.post("/api/temporal/codec/decode", json={"payloads": [payload]})
    assert anonymous.status_code == 401


async def test_encode_round_trip_and_bad_input(api: Api) -> None:
    _, admin = await api.token("admin")
    plain = MessageToDict(DataConverter.default.payload_converter.to_payloads(["hello"])[0])
    encoded = await api.client.post(
        "/api/temporal/codec/encode", json={"payloads": [plain]}, headers=admin
    )
    assert encoded.status_code == 200
    assert (
        base64.b64decode(encoded.json()["payloads"][0]["metadata"]["encoding"])
        == b"binary/encrypted"
    )
    decoded = await api.client.post(
        "/api/temporal/codec/decode", json=encoded.json(), headers=admin
    )
    assert decoded.json()["payloads"][0] == plain
    bad = await api.client.post(
        "/api/temporal/codec/decode", json={"payloads": [{"data": 5}]}, headers=admin
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    tampered = dict(encoded.json()["payloads"][0])
    tampered["data"] = base64.b64encode(b"\x01" + b"0" * 40).decode()
    broken = await api.client.post(
        "/api/temporal/codec/decode", json={"payloads": [tampered]}, headers=admin
    )
    assert broken.status_code == 400


async def test_cors_preflight_from_the_temporal_ui(api: Api) -> None:
    # Exactly the UI address `idp dev` prints; `localhost` is another site to the browser,
    # where the codec session cookie is not sent anyway.
    origin = f"http://127.0.0.1:{api.settings.temporal_ui_port}"
    preflight = await api.client.options(
        "/api/temporal/codec/decode",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    for other_origin in (
        "https://evil.example",
        f"http://localhost:{api.settings.temporal_ui_port}",
    ):
        other = await api.client.options(
            "/api/temporal/codec/decode",
            headers={"Origin": other_origin, "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers
