"""SDK listeners for the chaos run: many `BondClient.listen` loops in one process, each recording
every event it yields (and every frame the gateway sent, before the SDK's own seq filter).

    python -m bench.chaos.clients --api URL --ws URL --out FILE CID:STREAM_ID ...

Each yielded event becomes a line `cid seq recv_ms digest` in FILE (flushed every 0.2 s);
on SIGTERM the process writes FILE.summary.json (per client: frames, re-sent frames the SDK
hid, reconnects, errors) and exits.
"""

import argparse
import asyncio
import contextlib
import contextvars
import hashlib
import json
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bond.client
from bond.client import BondClient
from bond.errors import BondError


def digest(event: dict[str, Any]) -> str:
  """Return a short digest of an event's full content (key order does not matter)."""
  text = json.dumps(event, sort_keys=True, separators=(",", ":"))
  return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class Tracker:
  """What one client saw on the wire and from the SDK."""

  cid: int
  stream_id: str
  frames: int = 0
  events: int = 0
  resent: list[int] = field(default_factory=list)
  last_frame: int | None = None
  reconnects: int = 0
  errors: list[str] = field(default_factory=list)


CURRENT: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar(
  "chaos_client", default=None
)


class _JsonSpy:
  """Stands in for `json` inside bond.client: notes each frame's seq for the listening client."""

  def __getattr__(self, name: str) -> Any:
    return getattr(json, name)

  def loads(self, text: Any, *args: Any, **kwargs: Any) -> Any:
    obj = json.loads(text, *args, **kwargs)
    tracker = CURRENT.get()
    if tracker is not None and isinstance(obj, dict) and isinstance(obj.get("seq"), int):
      seq = obj["seq"]
      tracker.frames += 1
      if tracker.last_frame is not None and seq <= tracker.last_frame:
        tracker.resent.append(seq)  # the gateway promised strictly increasing seq
      tracker.last_frame = seq if tracker.last_frame is None else max(tracker.last_frame, seq)
    return obj


bond.client.json = _JsonSpy()  # type: ignore[assignment]


async def listen_one(tracker: Tracker, api: str, ws: str, lines: list[str]) -> None:
  """Listen to one stream forever, recording each event; resume after the last one on errors."""
  CURRENT.set(tracker)
  last: int | None = None
  while True:
    client = BondClient(api, ws_url=ws)
    try:
      async for event in client.listen(
        tracker.stream_id, from_=None if last is None else str(last)
      ):
        recv_ms = int(time.time() * 1000)
        seq = int(event["seq"])
        tracker.events += 1
        lines.append(f"{tracker.cid} {seq} {recv_ms} {digest(dict(event))}\n")
        last = seq
    except BondError as err:  # a final close or an API refusal: note it and listen again
      tracker.errors.append(f"{int(time.time() * 1000)} {err}")
      await asyncio.sleep(1.0)
    finally:
      tracker.reconnects += client.reconnects
      await client.aclose()


async def main_async(args: argparse.Namespace) -> None:
  out = Path(args.out)
  trackers = []
  for item in args.clients:
    cid, sid = item.split(":", 1)
    trackers.append(Tracker(int(cid), sid))
  lines: list[str] = []
  stop = asyncio.Event()
  loop = asyncio.get_running_loop()
  for sig in (signal.SIGTERM, signal.SIGINT):
    loop.add_signal_handler(sig, stop.set)
  tasks = []
  for t in trackers:
    tasks.append(asyncio.create_task(listen_one(t, args.api, args.ws, lines)))
    await asyncio.sleep(0.01)  # spread the token requests a little
  with out.open("a") as fh:  # noqa: ASYNC230
    while not stop.is_set():
      with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), 0.2)
      if lines:
        chunk, lines[:] = "".join(lines), []
        fh.write(chunk)
        fh.flush()
    for task in tasks:
      task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    fh.write("".join(lines))
  summary = {
    str(t.cid): {k: v for k, v in asdict(t).items() if k != "last_frame"} for t in trackers
  }
  Path(f"{out}.summary.json").write_text(json.dumps(summary))  # noqa: ASYNC240


def main() -> None:
  """Parse the command line and listen until SIGTERM."""
  parser = argparse.ArgumentParser(prog="python -m bench.chaos.clients", description=__doc__)
  parser.add_argument("--api", required=True)
  parser.add_argument("--ws", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("clients", nargs="+", help="CID:STREAM_ID")
  asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
  main()
