"""The wire format: sizes, layout, byte order, and the documentation generated from it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from quayside.core import wire
from quayside.core.wire import DTYPES, HEADER_SIZE, RECORD_SIZE, RecordKind, header_dtype, record_dtype

DOC = Path(__file__).resolve().parents[1] / "docs" / "wire-format.md"


@pytest.mark.parametrize("kind", sorted(DTYPES))
def test_every_record_is_one_cache_line_with_the_common_header(kind):
    dt = DTYPES[kind]
    assert dt.itemsize == RECORD_SIZE
    for name in header_dtype.names:
        assert dt.fields[name][:2] == header_dtype.fields[name][:2], name
    for name in dt.names:
        fdt, offset = dt.fields[name][:2]
        assert fdt.byteorder in ("<", "|", "="), f"{name} is not little-endian"
        assert offset + fdt.itemsize <= RECORD_SIZE
        if fdt.kind != "V":
            assert offset % fdt.itemsize == 0, f"{name} is misaligned"
        if name in header_dtype.names:
            continue
        assert offset >= HEADER_SIZE, f"{name} overlaps the header"


@pytest.mark.parametrize("kind", sorted(DTYPES))
def test_fields_do_not_overlap(kind):
    dt = DTYPES[kind]
    spans = sorted((dt.fields[n][1], dt.fields[n][1] + dt.fields[n][0].itemsize, n) for n in dt.names)
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        assert end <= start, f"{a} overlaps {b}"


def test_kinds_are_distinct_and_all_have_a_dtype():
    assert len(set(RecordKind)) == len(RecordKind)
    assert set(RecordKind) == set(DTYPES)
    for enum in (wire.DenyReason, wire.ControlCommand, wire.LimitId, wire.OrderStatus, wire.LogCode):
        assert len(set(enum)) == len(enum)
    assert set(wire.LOG_TEMPLATES) == set(wire.LogCode)


def test_a_record_round_trips_through_bytes_and_the_generic_view():
    q = np.zeros(1, wire.quote_dtype)
    q["kind"], q["version"], q["instrument_id"], q["seq"] = RecordKind.QUOTE, 1, 7, 2**40 + 3
    q["ts_event"], q["bid_price"], q["ask_price"] = 1_700_000_000_123_456_789, 1.12345, 1.12350
    raw = q.tobytes()
    assert len(raw) == 64
    assert raw[0] == RecordKind.QUOTE and raw[4] == 7  # little-endian instrument_id
    generic = np.frombuffer(raw, record_dtype)
    assert generic["seq"][0] == 2**40 + 3
    back = generic.view(wire.dtype_for(generic["kind"][0]))
    assert back["bid_price"][0] == 1.12345 and back["ts_event"][0] == 1_700_000_000_123_456_789


def test_validate_flags_unknown_kinds_and_versions():
    recs = np.zeros(4, record_dtype)
    recs["kind"] = [RecordKind.QUOTE, 200, RecordKind.FILL, RecordKind.TRADE]
    recs["version"] = [1, 1, 2, 0]
    assert wire.validate(recs).tolist() == [True, False, False, False]
    with pytest.raises(wire.WireFormatError, match="64"):
        wire.validate(np.zeros(2, np.int64))
    with pytest.raises(wire.WireFormatError, match="unknown record kind 99"):
        wire.dtype_for(99)


def test_enum_names():
    assert wire.enum_name(wire.DenyReason, wire.DenyReason.PRICE_COLLAR) == "PRICE_COLLAR"
    assert wire.enum_name(wire.Side, 5) == "UNKNOWN(5)"


def test_segment_header_keeps_producer_and_consumer_apart():
    dt = wire.segment_header_dtype
    assert dt.itemsize == wire.SEGMENT_HEADER_SIZE
    producer = [dt.fields[n][1] for n in dt.names if n.startswith("producer") or n in ("backpressure",)]
    consumer = [dt.fields[n][1] for n in dt.names if n.startswith("consumer")]
    assert min(consumer) - max(producer) >= 64 and min(producer) >= 128
    assert wire.datagram_header_dtype.itemsize == wire.DATAGRAM_HEADER_SIZE


def test_documentation_matches_the_dtypes():
    assert DOC.read_text() == wire.markdown() + "\n", (
        "docs/wire-format.md is out of date: run `python -m quayside.core.wire > docs/wire-format.md`"
    )
