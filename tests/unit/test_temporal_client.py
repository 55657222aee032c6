from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from core.errors import ConfigError
from core.settings import Settings
from core.temporal.client import connect_options, find_temporal_cli
from core.topology import Topology


def test_dev_server_by_default(topology: Topology) -> None:
    options = connect_options(Settings(temporal_dev_port=7999), topology)
    assert options.target == "127.0.0.1:7999"
    assert options.namespace == topology.namespace
    assert options.tls is False and options.api_key is None


def test_cluster_with_mtls(tmp_path: Path, topology: Topology) -> None:
    cert, key, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    ca.write_bytes(b"CA")
    settings = Settings(
        temporal_address="acme.a1b2c.tmprl.cloud:7233",
        temporal_namespace="acme.a1b2c",
        temporal_tls_cert=cert,
        temporal_tls_key=key,
        temporal_tls_ca=ca,
        temporal_tls_server_name="acme.a1b2c.tmprl.cloud",
    )
    options = connect_options(settings, topology)
    assert options.target == "acme.a1b2c.tmprl.cloud:7233"
    assert options.namespace == "acme.a1b2c"
    assert options.tls == TLSConfig(
        client_cert=b"CERT",
        client_private_key=b"KEY",
        server_root_ca_cert=b"CA",
        domain="acme.a1b2c.tmprl.cloud",
    )


def test_api_key_turns_tls_on(topology: Topology) -> None:
    options = connect_options(
        Settings(temporal_address="eu.aws.api.temporal.io:7233", temporal_api_key="k-123"), topology
    )
    assert options.api_key == "k-123"
    assert isinstance(options.tls, TLSConfig)
    off = connect_options(
        Settings(temporal_address="h:7233", temporal_api_key="k", temporal_tls=False), topology
    )
    assert off.tls is False


def test_tls_errors_are_clear(tmp_path: Path, topology: Topology) -> None:
    with pytest.raises(ConfigError, match="must be given together"):
        connect_options(Settings(temporal_tls_cert=tmp_path / "c.pem"), topology)
    with pytest.raises(ConfigError, match="TEMPORAL_TLS_CERT .*cannot read it"):
        connect_options(
            Settings(temporal_tls_cert=tmp_path / "c.pem", temporal_tls_key=tmp_path / "k.pem"),
            topology,
        )
    with pytest.raises(ConfigError, match="TEMPORAL_ADDRESS: 'nohost' is not host:port"):
        from core.settings import load_settings

        load_settings(overrides={"temporal_address": "nohost"})


def test_temporal_cli_found_and_missing(tmp_path: Path) -> None:
    assert find_temporal_cli().name == "temporal"
    fake = tmp_path / "temporal"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_temporal_cli(Settings(temporal_cli=fake)) == fake
    fake.chmod(0o644)
    with pytest.raises(ConfigError, match="TEMPORAL_CLI_PATH .* is not an executable file"):
        find_temporal_cli(Settings(temporal_cli=fake))
