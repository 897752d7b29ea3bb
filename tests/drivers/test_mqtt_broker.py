"""simulators.broker.Broker: a real Mosquitto on a free port that keeps QoS 1 messages across restarts."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

import simulators.broker as broker_module
from simulators.broker import Broker, BrokerError


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_start_stop_restart_same_port(mqtt_broker: Broker) -> None:
    assert mqtt_broker.port != 1883
    assert mqtt_broker.url == f"mqtt://127.0.0.1:{mqtt_broker.port}"
    assert accepts(mqtt_broker.port)
    first_pid = mqtt_broker.pid
    mqtt_broker.restart()
    assert mqtt_broker.pid != first_pid
    assert accepts(mqtt_broker.port)
    mqtt_broker.stop()
    assert not mqtt_broker.running
    assert not accepts(mqtt_broker.port)
    assert (mqtt_broker.data_dir / "mosquitto.db").exists()  # SIGTERM saved the persistence file


def test_config_keeps_what_mosquitto_drops_by_default(mqtt_broker: Broker) -> None:
    config = mqtt_broker.config_path.read_text().splitlines()
    for line in ("persistence true", "max_queued_messages 0", "autosave_interval 1", "allow_anonymous true"):
        assert line in config
    assert f"listener {mqtt_broker.port} 127.0.0.1" in config
    assert not any(line.startswith("persistent_client_expiration") for line in config)


def test_context_manager_and_own_temp_dir() -> None:
    with Broker() as broker:
        data_dir = broker.data_dir
        assert accepts(broker.port)
    assert not broker.running
    assert not data_dir.exists()


def test_port_in_use_is_refused(tmp_path: Path, mqtt_broker: Broker) -> None:
    clash = Broker(data_dir=tmp_path / "second", port=mqtt_broker.port)
    with pytest.raises(BrokerError, match=f"something already listens on 127.0.0.1:{mqtt_broker.port}"):
        clash.start()
    assert not clash.running


def test_exit_at_start_is_reported_with_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker(data_dir=tmp_path / "bad")
    write_config = broker._write_config

    def bad_config() -> None:
        write_config()
        with broker.config_path.open("a") as f:
            f.write("no_such_option 1\n")

    monkeypatch.setattr(broker, "_write_config", bad_config)
    with pytest.raises(BrokerError) as info:
        broker.start()
    text = str(info.value)
    assert f"mosquitto on 127.0.0.1:{broker.port} exited with code" in text
    assert "no_such_option" in text
    assert not broker.running


def test_missing_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(broker_module, "_MOSQUITTO_PATHS", ("/nonexistent/mosquitto",))
    with pytest.raises(BrokerError, match="install Debian's 'mosquitto' package"):
        Broker()
