"""The simulated gateway's configuration: one schema, files, environment overrides, and the
admin command parser."""

from __future__ import annotations

import math

import pytest

from quayside.core.broker.sim.config import ConfigError, SimGatewayConfig, apply_env, load_config
from quayside.core.broker.sim.faults import CommandError, parse_command


def test_defaults_are_ib_gateway_paper_on_localhost():
    c = SimGatewayConfig()
    assert (c.host, c.port, c.admin_port, c.account) == ("127.0.0.1", 4002, 4003, "DU0000001")
    assert c.data.path is None and c.data.speed == 1.0 and c.commission["STK"].per_unit == 0.005


def test_a_file_with_every_kind_of_setting(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(
        "port = 4100\ncommission_delay_ms = 250\n[data]\nspeed = inf\nseed = 3\n[commission.FUT]\nper_unit = 1.5\n"
        '[[positions]]\nsymbol = "AAPL"\nquantity = 10\navg_price = 100.0\n'
    )
    c = load_config(path, environ={})
    assert c.port == 4100 and c.commission_delay_ms == 250 and math.isinf(c.data.speed) and c.as_fast_as_possible
    assert c.commission["FUT"].per_unit == 1.5 and c.positions[0].symbol == "AAPL"
    path.write_text("port = 4100\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"gw\.toml: prot: Extra inputs are not permitted"):
        load_config(path, environ={})


def test_environment_overrides_for_containers():
    env = {
        "QUAYSIDE_SIMGATEWAY_PORT": "4200",
        "QUAYSIDE_SIMGATEWAY_ADMIN_PORT": "none",
        "QUAYSIDE_SIMGATEWAY_DATA_SPEED": "inf",
        "QUAYSIDE_SIMGATEWAY_DATA_SYMBOLS": "EURUSD,AAPL",
        "OTHER": "x",
    }
    c = apply_env(SimGatewayConfig(), env)
    assert c.port == 4200 and c.admin_port is None and math.isinf(c.data.speed) and c.data.symbols == ["EURUSD", "AAPL"]
    with pytest.raises(ConfigError, match="QUAYSIDE_SIMGATEWAY_PROT is not a setting"):
        apply_env(SimGatewayConfig(), {"QUAYSIDE_SIMGATEWAY_PROT": "1"})
    with pytest.raises(ConfigError, match="environment: port"):
        apply_env(SimGatewayConfig(), {"QUAYSIDE_SIMGATEWAY_PORT": "many"})


def test_admin_commands_are_checked_before_they_run():
    assert parse_command("error 1100") == (
        "error",
        [1100, -1, "Connectivity between IB and Trader Workstation has been lost."],
    )
    assert parse_command("ERROR 2104 5 custom text") == ("error", [2104, 5, "custom text"])
    assert parse_command("drop") == ("drop", [0.0]) and parse_command("drop 30") == ("drop", [30.0])
    assert parse_command("speed max")[1] == [math.inf] and parse_command("pacing")[1] == [100]
    assert parse_command("reject-next-order")[1][0] == 201
    for bad, why in [
        ("", "empty command"),
        ("explode", "unknown command"),
        ("delay", "usage: delay MS"),
        ("delay -1", "MS must be >= 0"),
        ("step nan", "SECONDS must be a number"),
        ("speed 0", "X must be > 0"),
        ("halt-data now", "takes no arguments"),
        ("refuse-client-id x", "ID must be a number"),
    ]:
        with pytest.raises(CommandError, match=why):
            parse_command(bad)
