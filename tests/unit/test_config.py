"""Settings: one object from env, config file and defaults; security passes through."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelflow.config import Settings


def test_env_prefix_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LABELFLOW_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("LABELFLOW_KAFKA_PORT", "19999")
    s = Settings()
    assert s.data_dir == Path(".labelflow")
    assert s.uses_local_broker
    assert s.bootstrap_servers == "127.0.0.1:19999"
    assert s.resolved_catalog_url.startswith("sqlite:///")
    assert s.resolved_catalog_url.endswith(".labelflow/catalog.db")


def test_external_bootstrap_and_sasl_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELFLOW_KAFKA_BOOTSTRAP", "kafka-1:9094,kafka-2:9094")
    monkeypatch.setenv("LABELFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LABELFLOW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("LABELFLOW_KAFKA_SASL_USERNAME", "labelflow")
    monkeypatch.setenv("LABELFLOW_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("LABELFLOW_KAFKA_CLIENT_EXTRA", '{"client.rack": "eu-1a"}')
    s = Settings()
    assert not s.uses_local_broker
    conf = s.kafka_client_config()
    assert conf["bootstrap.servers"] == "kafka-1:9094,kafka-2:9094"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "s3cret"
    assert conf["client.rack"] == "eu-1a"
    assert "s3cret" not in repr(s)  # secrets never end up in logs via repr


def test_config_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "lf.toml"
    cfg.write_text('topic_partitions = 12\ntopic_prefix = "from-file."\n')
    monkeypatch.setenv("LABELFLOW_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("LABELFLOW_TOPIC_PREFIX", "from-env.")
    s = Settings()
    assert s.topic_partitions == 12
    assert s.topic_prefix == "from-env."


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELFLOW_KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON")
    with pytest.raises(ValueError, match="kafka_security_protocol"):
        Settings()
