"""`bond export <id> --from now-6h [--to ...] -o btc.parquet|.csv|.jsonl`: a stream's history
to a file, page by page from GET /v1/streams/{id}/windows (see bond.tables for the columns).

The file is written next to its final name and renamed when complete, so an interrupted
export leaves no half file behind. Parquet needs pyarrow (`bond-streams[pandas]`).
"""

import csv
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from bond import tables
from bond.client import SyncBondClient

SUFFIXES = {
  ".parquet": "parquet",
  ".pq": "parquet",
  ".csv": "csv",
  ".jsonl": "jsonl",
  ".ndjson": "jsonl",
}


def format_of(path: str, fmt: str | None) -> str:
  """Return the export format: the one asked, else the one the file name ends with."""
  if fmt is not None:
    if fmt not in tables.FORMATS:
      raise ValueError(f"--format {fmt!r} is not one of {', '.join(tables.FORMATS)}")
    return fmt
  suffix = Path(path).suffix.lower()
  if suffix not in SUFFIXES:
    raise ValueError(
      f"cannot tell the format of {path!r}: name it .parquet, .csv or .jsonl, or pass --format"
    )
  return SUFFIXES[suffix]


def _write_text(pages: Any, fmt: str, out: TextIO) -> int:
  count = 0
  writer: csv.DictWriter[str] | None = None
  for page in pages:
    if fmt == "jsonl":
      out.write(tables.to_jsonl(page))
    else:
      rows = [tables.flatten(e) for e in page]
      if writer is None:  # a stream's windows all have the columns of its first one
        writer = csv.DictWriter(
          out, fieldnames=tables.columns(rows), extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
      writer.writerows(rows)
    count += len(page)
  return count


def export(
  client: SyncBondClient,
  stream_id: str,
  from_: str,
  to: str | None,
  path: str,
  fmt: str | None = None,
  limit: int | None = None,
) -> int:
  """Write a stream's windows to `path`; return how many."""
  kind = format_of(path, fmt)
  if kind == "parquet":
    try:
      import pyarrow.parquet  # noqa: F401 - fail before fetching anything
    except ImportError:
      raise ValueError("Parquet needs pyarrow: pip install 'bond-streams[pandas]'") from None
  target = Path(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
  try:
    pages = client.history_pages(stream_id, from_, to, limit)
    if kind == "parquet":
      os.close(fd)
      rows: list[dict[str, Any]] = [e for page in pages for e in page]
      Path(tmp).write_bytes(tables.to_parquet(rows))
      count = len(rows)
    else:
      with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        count = _write_text(pages, kind, out)
    os.replace(tmp, target)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
  return count


def export_main(client: SyncBondClient, args: Any, err: TextIO = sys.stderr) -> int:
  """Run `bond export`; return the exit status."""
  try:
    count = export(
      client, args.stream_id, args.from_, args.to, args.output, args.format, args.limit
    )
  except ValueError as exc:
    print(f"bond export: {exc}", file=err)
    return 2
  print(f"wrote {count} windows of {args.stream_id} to {args.output}", file=err)
  return 0
