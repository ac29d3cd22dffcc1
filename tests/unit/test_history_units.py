"""History without I/O: table rows, `to`, when Kafka is read, export formats, history paging."""

import csv
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bond import tables
from bond.cli_export import format_of
from bond.client import _history_query
from bond.gateway.history import HistoryBusy, Slots, from_kafka, oldest_ms
from bond.gateway.resume import parse_from, parse_to
from bond.topics.catalog import RAW_TOPICS, catalog, stream_topic

SEQ = 1_700_000_005_000
EVENT: dict[str, Any] = {
  "stream_id": "abc",
  "seq": 1_700_000_005_000,
  "ts": "2023-11-14T22:13:25Z",
  "window_start": "2023-11-14T22:13:20Z",
  "interval_sec": 5,
  "price_avg": 68000.5,
  "trades": 3,
  "complete": False,
  "missing": ["ccxt|okx|BTC/USDT"],
  "onchain": {"tx": 2, "transfer": 1},
  "raw_data": {"sim": True},
  "by_symbol": {"BTC/USDT": {"price_avg": 68000.5, "trades": 3}},
}


def test_flatten_spreads_scalar_maps_and_keeps_the_rest_as_json_text():
  row = tables.flatten(EVENT)
  assert row["onchain.tx"] == 2 and row["onchain.transfer"] == 1 and "onchain" not in row
  assert json.loads(str(row["by_symbol"])) == EVENT["by_symbol"]
  assert json.loads(str(row["raw_data"])) == {"sim": True}
  assert json.loads(str(row["missing"])) == ["ccxt|okx|BTC/USDT"]
  assert tables.columns([row])[:5] == ["stream_id", "seq", "ts", "window_start", "interval_sec"]


def test_csv_reads_back():
  text = tables.to_csv([EVENT, {**EVENT, "seq": SEQ + 5000}])
  rows = list(csv.DictReader(io.StringIO(text)))
  assert [int(r["seq"]) for r in rows] == [EVENT["seq"], SEQ + 5000]
  assert rows[0]["onchain.tx"] == "2" and rows[0]["complete"] == "False"


def test_parquet_has_utc_millisecond_times_and_typed_columns():
  buf = tables.to_parquet([EVENT, {**EVENT, "price_avg": None, "seq": SEQ + 5000}])
  table = pq.read_table(pa.BufferReader(buf))
  assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
  assert table.schema.field("seq").type == pa.int64()
  assert table.schema.field("price_avg").type == pa.float64()
  assert table.schema.field("complete").type == pa.bool_()
  assert table.column("price_avg").to_pylist() == [68000.5, None]
  ts = table.column("ts").to_pylist()[0]
  assert int(ts.timestamp() * 1000) == EVENT["seq"]


def test_to_is_inclusive_and_takes_the_forms_of_from():
  now = 1_700_000_000_000
  assert parse_to("1700000000000") == 1_700_000_000_000
  assert parse_to("now-1h", now) == now - 3_600_000
  assert parse_to("2023-11-14T22:13:20Z") == 1_700_000_000_000
  assert parse_from("1700000000000").min_seq == 1_700_000_000_001  # from a seq: after it
  with pytest.raises(ValueError, match="to='soon'"):
    parse_to("soon")


def test_kafka_is_read_only_for_a_from_older_than_the_ring():
  now, ring_sec = 10_000_000, 60
  assert not from_kafka(now - 30_000, now - 59_000, ring_sec, now)  # inside the ring
  assert not from_kafka(now - 60_000, now - 55_000, ring_sec, now)  # from=now-60s: the ring
  assert from_kafka(now - 120_000, now - 59_000, ring_sec, now)  # older than the ring
  assert from_kafka(now - 120_000, None, ring_sec, now)  # ring empty
  # Ring empty, even for a recent `from`: Redis may not have what Kafka already has.
  assert from_kafka(now - 5_000, None, ring_sec, now)
  assert not from_kafka(now - 120_000, now - 500_000, ring_sec, now)  # a ring reaching back
  assert oldest_ms(3, now) == now - 3 * 3_600_000


def test_history_readers_are_bounded():
  slots = Slots(1)
  with slots.take():
    with pytest.raises(HistoryBusy, match="BOND_HISTORY_READERS"):
      slots.take()
  with slots.take():
    pass


def test_retention_settings_shape_the_topics():
  assert stream_topic("x", 7_200_000).configs()["retention.ms"] == "7200000"
  raw = {s.name for s in RAW_TOPICS.values()}
  for spec in catalog(3_600_000):
    if spec.name in raw:
      assert spec.retention_ms == 3_600_000
    else:
      assert spec.retention_ms != 3_600_000


def test_export_format_from_the_file_name():
  assert format_of("btc.parquet", None) == "parquet"
  assert format_of("out/btc.CSV", None) == "csv"
  assert format_of("btc.txt", "jsonl") == "jsonl"
  with pytest.raises(ValueError, match="cannot tell the format"):
    format_of("btc.xlsx", None)


def test_history_pages_ask_for_what_is_left():
  assert _history_query("now-1h", None, None, 0, None, 1000) == {
    "limit": "1000",
    "format": "jsonl",
    "from": "now-1h",
  }
  q = _history_query("now-1h", "now", 1500, 1000, "123", 1000)
  assert q == {"limit": "500", "format": "jsonl", "cursor": "123", "to": "now"}
  assert _history_query("now-1h", None, 1000, 1000, "123", 1000) is None
