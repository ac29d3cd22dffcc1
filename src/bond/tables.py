"""Windows as table rows: the columns of CSV, Parquet and pandas exports.

A window (AggregatedEvent JSON) becomes one flat row: scalar fields keep their name, a map
of scalars (`onchain`) becomes one column per key (`onchain.tx`), and `by_symbol`,
`raw_data` and any list (`missing`) are JSON text. `ts` and `window_start` stay ISO-8601
text in CSV; Parquet and pandas hold them as UTC timestamps in milliseconds.

The CSV and JSON writers need nothing beyond the standard library; Parquet needs pyarrow
(`bond-streams[server]` or `bond-streams[pandas]`).
"""

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from bond import wire

FORMATS = ("jsonl", "csv", "parquet")
JSON_TEXT_FIELDS = ("by_symbol", "raw_data")  # always one JSON text column
TIME_FIELDS = ("ts", "window_start")
FIRST = ("stream_id", "seq", "ts", "window_start", "interval_sec")

Scalar = str | int | float | bool | None


def _text(value: Any) -> str:
  return json.dumps(value, separators=(",", ":"), sort_keys=True)


def flatten(event: Mapping[str, Any]) -> dict[str, Scalar]:
  """Return one window as a flat row (see the module doc)."""
  row: dict[str, Scalar] = {}
  for name, value in event.items():
    if name in JSON_TEXT_FIELDS or isinstance(value, list):
      row[name] = None if value is None else _text(value)
    elif isinstance(value, Mapping):
      if all(v is None or isinstance(v, str | int | float | bool) for v in value.values()):
        for key in sorted(value):
          row[f"{name}.{key}"] = value[key]
      else:
        row[name] = _text(value)
    else:
      row[name] = value
  return row


def columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
  """Return the columns of flat rows: the first ones fixed, then in order of appearance."""
  seen: dict[str, None] = dict.fromkeys(FIRST)
  for row in rows:
    seen.update(dict.fromkeys(row))
  return list(seen)


def to_csv(events: Iterable[Mapping[str, Any]], header: bool = True) -> str:
  """Return windows as CSV text (a header line first unless told not to)."""
  rows = [flatten(e) for e in events]
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=columns(rows), extrasaction="ignore", lineterminator="\n")
  if header:
    writer.writeheader()
  writer.writerows(rows)
  return out.getvalue()


def to_jsonl(events: Iterable[Mapping[str, Any]]) -> str:
  """Return windows as JSON lines."""
  return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)


def time_ms(value: Any) -> int | None:
  """Return epoch ms of an ISO-8601 text (None for None)."""
  return None if value is None else wire.parse_iso_ms(str(value))


def arrow_table(events: Iterable[Mapping[str, Any]]) -> Any:
  """Return windows as a pyarrow Table (`ts`, `window_start`: timestamp ms UTC)."""
  import pyarrow as pa

  rows = [flatten(e) for e in events]
  names = columns(rows)
  fields = []
  data: dict[str, list[Any]] = {}
  for name in names:
    values = [row.get(name) for row in rows]
    if name in TIME_FIELDS:
      fields.append(pa.field(name, pa.timestamp("ms", tz="UTC")))
      values = [time_ms(v) for v in values]
    else:
      fields.append(pa.field(name, _arrow_type(name, values)))
    data[name] = values
  schema = pa.schema(fields)
  return pa.Table.from_pydict(data, schema=schema)


def _arrow_type(name: str, values: list[Any]) -> Any:
  import pyarrow as pa

  kinds = {type(v) for v in values if v is not None}
  if name == "seq" or kinds == {int}:
    return pa.int64()
  if kinds == {bool}:
    return pa.bool_()
  if kinds and kinds <= {int, float}:
    return pa.float64()
  if not kinds and name not in FIRST:
    return pa.float64()  # a statistic null in every row of the page
  return pa.string()


def to_parquet(events: Iterable[Mapping[str, Any]]) -> bytes:
  """Return windows as one Parquet file (zstd)."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  sink = pa.BufferOutputStream()
  pq.write_table(arrow_table(events), sink, compression="zstd")
  return bytes(sink.getvalue().to_pybytes())


def to_frame(events: Iterable[Mapping[str, Any]]) -> Any:
  """Return windows as a pandas DataFrame of flat rows, `ts`/`window_start` as UTC times."""
  try:
    import pandas as pd
  except ImportError:
    raise ImportError("as_frame=True needs pandas: pip install 'bond-streams[pandas]'") from None
  rows = [flatten(e) for e in events]
  frame = pd.DataFrame(rows, columns=columns(rows) if rows else list(FIRST))
  for name in TIME_FIELDS:
    if name in frame:
      frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
  return frame
