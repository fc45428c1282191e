"""The instrument registry both sides load."""

from __future__ import annotations

import pytest

from quayside.core.instruments import Instrument, InstrumentRegistry, RegistryError, default_registry


def test_default_registry_round_trips_through_toml(tmp_path):
    reg = default_registry()
    path = tmp_path / "instruments.toml"
    path.write_text(reg.to_toml())
    loaded = InstrumentRegistry.load(path)
    assert [i.model_dump() for i in loaded] == [i.model_dump() for i in reg]
    assert loaded.by_symbol("ESZ6").multiplier == 50.0
    arrays = loaded.arrays()
    assert arrays[4]["multiplier"] == 50.0 and arrays[0]["known"] == 0 and arrays[1]["known"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[instrument]]\nid = 1\nsymbol = "A"\ncolour = "red"\n', "number 1, field colour: Extra inputs"),
        ('[[instrument]]\nid = 0\nsymbol = "A"\n', "number 1, field id: Input should be greater than or equal to 1"),
        ('[[instrument]]\nid = 1\nsymbol = "A"\n[[instrument]]\nid = 1\nsymbol = "B"\n', "id 1 is used twice"),
        ('[[instrument]]\nid = 1\nsymbol = "A"\n[[instrument]]\nid = 2\nsymbol = "A"\n', "symbol 'A' is used twice"),
        ('[[instrument]]\nid = 1\nsymbol = "A"\ncurrency = "usd"\n', "field currency"),
        ('account_currency = "USD"\n[[instrument]\n', "not valid TOML"),
        ('accountcurrency = "USD"\n', "accountcurrency: Extra inputs"),
    ],
)
def test_malformed_registry_files_name_the_file_and_entry(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RegistryError) as err:
        InstrumentRegistry.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_file_and_unknown_lookups_are_clear(tmp_path):
    with pytest.raises(RegistryError, match="no such instrument registry file"):
        InstrumentRegistry.load(tmp_path / "nope.toml")
    reg = InstrumentRegistry([Instrument(id=3, symbol="X")])
    with pytest.raises(KeyError, match="instrument id 9"):
        reg.by_id(9)
    assert 3 in reg and "X" in reg and "Y" not in reg
