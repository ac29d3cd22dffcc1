"""`bond listen`: print a stream's windows as a live table (people) or JSON lines (pipes)."""

import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

from bond.client import BondClient

Format = Literal["table", "json"]

HEADER_EVERY = 25
_COLUMNS = (
  ("time", 8),
  ("symbol", 10),
  ("avg", 12),
  ("open", 12),
  ("high", 12),
  ("low", 12),
  ("close", 12),
  ("vwap", 12),
  ("volume", 11),
  ("trades", 6),
  ("tweets", 6),
  ("onchain", 7),
)


def _num(value: Any, digits: int = 2) -> str:
  if value is None:
    return "-"
  if isinstance(value, int | float):
    return f"{value:,.{digits}f}"
  return str(value)


def table_rows(event: Mapping[str, Any]) -> list[list[str]]:
  """Return the table cells of one window: one row per symbol."""
  clock = str(event.get("ts", ""))[11:19] or "-"
  onchain = event.get("onchain") or {}
  chain = str(sum(v for v in onchain.values() if isinstance(v, int)))
  per_symbol = event.get("by_symbol") or {event.get("symbol") or "-": event}
  rows = []
  for symbol, fields in per_symbol.items():
    rows.append(
      [
        clock,
        str(symbol),
        _num(fields.get("price_avg")),
        _num(fields.get("price_open")),
        _num(fields.get("price_high")),
        _num(fields.get("price_low")),
        _num(fields.get("price_close")),
        _num(fields.get("vwap")),
        _num(fields.get("volume_sum"), 4),
        str(fields.get("trades", 0)),
        str(fields.get("tweets", event.get("tweets", 0))),
        chain,
      ]
    )
  return rows


def _line(cells: list[str]) -> str:
  return "  ".join(
    cell.ljust(width) if i < 2 else cell.rjust(width)
    for i, (cell, (_, width)) in enumerate(zip(cells, _COLUMNS, strict=True))
  )


class TablePrinter:
  """Prints windows as rows of a table, repeating the header now and then."""

  def __init__(self, out: TextIO) -> None:
    self.out = out
    self.rows = 0

  def __call__(self, event: Mapping[str, Any]) -> None:
    """Print one window."""
    for cells in table_rows(event):
      if self.rows % HEADER_EVERY == 0:
        print(_line([name for name, _ in _COLUMNS]), file=self.out)
      print(_line(cells), file=self.out)
      self.rows += 1
    self.out.flush()


def json_printer(out: TextIO) -> Callable[[Mapping[str, Any]], None]:
  """Return a printer writing one JSON object per line, flushed each time."""

  def write(event: Mapping[str, Any]) -> None:
    out.write(json.dumps(event, separators=(",", ":")) + "\n")
    out.flush()

  return write


def _target(text: str) -> str | dict[str, Any]:
  # A JSON spec on the command line is a spec; anything else a sentence or a stream id.
  stripped = text.strip()
  if stripped.startswith("{"):
    try:
      spec = json.loads(stripped)
    except ValueError:
      return stripped
    if isinstance(spec, dict):
      return spec
  return stripped


async def listen_main(
  client: BondClient, target: str, from_: str | None, fmt: Format | None, out: TextIO | None = None
) -> int:
  """Print a stream's events until Ctrl-C; return the exit status."""
  stream = out or sys.stdout
  chosen = fmt or ("table" if stream.isatty() else "json")
  show = TablePrinter(stream) if chosen == "table" else json_printer(stream)
  try:
    async for event in client.listen(_target(target), from_=from_):
      show(event)
  except (asyncio.CancelledError, KeyboardInterrupt):
    return 0  # Ctrl-C: asyncio.run cancels this task; leaving quietly is the point
  except BrokenPipeError:
    # The reader of the pipe (head, jq) has had enough; keep the exit flush from failing.
    if stream is sys.stdout:
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
  finally:
    await client.aclose()
  return 0
