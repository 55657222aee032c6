"""A stand-in for a Temporal frontend that keeps its operator API for admins, as Temporal Cloud
does for a namespace API key (and a self-hosted cluster's authorizer for a non-admin): gRPC,
over TLS with a certificate for `localhost` from a CA of its own (`ca_file`) unless `tls` is
off. It answers the SDK's connection handshake (`GetSystemInfo`), refuses `AddSearchAttributes`
with `PERMISSION_DENIED` "Request unauthorized." (what Temporal's authorizer answers), and
refuses `ListSearchAttributes` too unless given the namespace's `registered` attributes.
Temporal Cloud cannot run here, and the dev server has no authorizer.

    with TemporalCloudStandin(tmp_path) as cloud:
        env = {"TEMPORAL_ADDRESS": cloud.address, "TEMPORAL_TLS_CA": str(cloud.ca_file), ...}
        cloud.calls  # the gRPC methods called, e.g. "/temporal.api.operatorservice.v1..."
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Mapping
from concurrent import futures
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesResponse
from temporalio.api.operatorservice.v1 import service_pb2_grpc as operator_grpc
from temporalio.api.workflowservice.v1 import GetSystemInfoResponse
from temporalio.api.workflowservice.v1 import service_pb2_grpc as workflow_grpc

REFUSAL = "Request unauthorized."


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificates(host: str = "localhost") -> tuple[bytes, bytes, bytes]:
    """A CA certificate, and a server certificate it signed for `host` and 127.0.0.1 with its
    private key (all PEM). rustls (the SDK's TLS) refuses a CA certificate as a server's."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("stand-in CA"))
        .issuer_name(_name("stand-in CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem = serialization.Encoding.PEM
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


class _Recorder(grpc.ServerInterceptor):
    def __init__(self, calls: list[str], keys: list[str]) -> None:
        self.calls = calls
        self.keys = keys

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        self.calls.append(handler_call_details.method)
        for name, value in handler_call_details.invocation_metadata or ():
            if name == "authorization":
                self.keys.append(value)
        return continuation(handler_call_details)


class _Workflow(workflow_grpc.WorkflowServiceServicer):
    def GetSystemInfo(self, request: Any, context: Any) -> GetSystemInfoResponse:
        return GetSystemInfoResponse(server_version="cloud-standin")


class _Operator(operator_grpc.OperatorServiceServicer):
    def __init__(self, registered: Mapping[str, IndexedValueType.ValueType] | None) -> None:
        self.registered = registered

    def ListSearchAttributes(self, request: Any, context: Any) -> Any:
        registered = self.registered
        if registered is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, REFUSAL)
            raise AssertionError("abort raises")
        return ListSearchAttributesResponse(custom_attributes=dict(registered))

    def AddSearchAttributes(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, REFUSAL)


class TemporalCloudStandin:
    def __init__(
        self,
        directory: Path,
        *,
        tls: bool = True,
        registered: Mapping[str, IndexedValueType.ValueType] | None = None,
    ) -> None:
        """`registered`: the custom attributes `ListSearchAttributes` answers (name to
        IndexedValueType); None refuses that call too."""
        ca, cert, key = certificates()
        self.ca_file = directory / "cloud-ca.pem"
        self.ca_file.write_bytes(ca)
        self.calls: list[str] = []
        self.authorization: list[str] = []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            interceptors=[_Recorder(self.calls, self.authorization)],
        )
        # The generated servicers declare every method abstract; the rest answer UNIMPLEMENTED.
        workflow_grpc.add_WorkflowServiceServicer_to_server(_Workflow(), self._server)  # type: ignore[abstract]
        operator_grpc.add_OperatorServiceServicer_to_server(_Operator(registered), self._server)  # type: ignore[abstract]
        if tls:
            port = self._server.add_secure_port(
                "127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)])
            )
        else:
            port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"

    def __enter__(self) -> TemporalCloudStandin:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop(grace=None)
