"""The `bond` command: run the local platform, inspect Kafka, and manage and listen to streams."""

import argparse
import os
import sys
import time
from pathlib import Path

from bond import __version__
from bond.errors import BondError

DEMO_SENTENCE = "BTC price + tweets every 5s"


def _stack(args: argparse.Namespace):  # -> DevStack, imported lazily: the SDK install lacks it
  from bond.config import get_settings
  from bond.devstack import DevStack

  settings = get_settings()
  kafka_port = int(settings.kafka_bootstrap.rsplit(":", 1)[-1])
  return DevStack(
    home=Path(settings.bond_home).absolute(),
    kafka_port=kafka_port,
    controller_port=kafka_port + 1,
    redis_url=settings.redis_url,
    api_port=settings.api_port,
    ws_port=settings.ws_port,
    sim_port=settings.bond_sim_port,
  )


def _progress(name: str, state: str, elapsed: float) -> None:
  mark = "✓" if state == "ready" else "…"
  detail = f"ready in {elapsed:.1f}s" if state == "ready" else state
  print(f"  {mark} {name:<8} {detail}", flush=True)


def cmd_up(args: argparse.Namespace) -> int:
  """Start Kafka, Redis and the platform in the background."""
  from bond.config import get_settings
  from bond.devstack import KAFKA_VERSION, java_version, kafka_libs

  settings = get_settings()
  market = args.market or settings.bond_market
  stack = _stack(args)
  if stack.running():
    raise BondError(
      f"Bond is already running from {stack.home} (see `bond status`; stop it with `bond down`)"
    )
  started = time.monotonic()
  print(
    f"Bond {__version__}: starting the local platform ({market} market) under {stack.home}",
    flush=True,
  )
  java_version()
  print(
    f"  … kafka    jars for Apache Kafka {KAFKA_VERSION} (cached in {kafka_libs().parent})",
    flush=True,
  )
  parts = [stack.kafka_part()]
  redis = stack.redis_part()
  if redis is None:
    print(f"  ✓ redis    using the one at {settings.redis_url}", flush=True)
  else:
    parts.append(redis)
  if not args.infra_only:
    settings.require_safe_secret()
    parts += stack.platform_parts(market)
  stack.up(parts, stack.process_env(market), _progress)
  print(
    f"Bond is up in {time.monotonic() - started:.1f}s. Logs: {stack.logs}  (bond logs, bond status, bond down)"
  )
  if not args.infra_only:
    print(
      f"  REST API  http://127.0.0.1:{stack.api_port}   WebSocket  ws://127.0.0.1:{stack.ws_port}"
    )
  return 0


def cmd_down(args: argparse.Namespace) -> int:
  """Stop everything `bond up` started."""
  stack = _stack(args)
  if stack.down():
    print("Bond stopped.")
  else:
    print("Bond was not running.")
  return 0


def cmd_status(args: argparse.Namespace) -> int:
  """Show each supervised part and its state."""
  stack = _stack(args)
  rows = stack.status()
  if not rows:
    print("Bond is not running (start it with `bond up`).")
    return 3
  for row in rows:
    print(f"  {row['name']:<8} {row['statename']:<9} pid {row['pid']:<7} {row['description']}")
  return 0


def cmd_logs(args: argparse.Namespace) -> int:
  """Print (and with -f follow) the logs of the platform's parts."""
  stack = _stack(args)
  names = args.parts or sorted(p.stem for p in stack.logs.glob("*.log") if p.stem != "supervisord")
  files = [str(stack.logs / f"{n}.log") for n in names if (stack.logs / f"{n}.log").exists()]
  if not files:
    print(f"no logs under {stack.logs} yet (start Bond with `bond up`)")
    return 1
  cmd = ["tail", "-n", str(args.lines), *(["-F"] if args.follow else []), *files]
  os.execvp("tail", cmd)
  return 0


def cmd_kafka(args: argparse.Namespace) -> int:
  """Run one of Kafka's console tools from the fetched jars."""
  from bond.config import get_settings
  from bond.devstack import kafka_tool

  return kafka_tool(args.tool, args.args, bootstrap=get_settings().kafka_bootstrap)


def _client(args: argparse.Namespace):  # -> BondClient
  from bond.client import BondClient

  return BondClient(api_url=args.api_url, api_key=args.api_key)


def cmd_demo(args: argparse.Namespace) -> int:
  """Start the platform in sim mode if needed, create the demo stream and print its events."""
  stack = _stack(args)
  if not stack.running():
    args.market, args.infra_only = "sim", False
    os.environ["BOND_MARKET"] = "sim"
    cmd_up(args)
  args.target, args.from_, args.format = [args.sentence], None, "table"
  print(
    f'\nCreating "{args.sentence}" and listening (Ctrl-C to stop; `bond down` stops the platform)\n'
  )
  return cmd_listen(args)


def cmd_create(args: argparse.Namespace) -> int:
  """Create a stream from a sentence and print its id and WebSocket URL."""
  import json

  with _client(args).sync() as client:
    info = client.create_stream(" ".join(args.sentence))
  print(json.dumps(info, indent=2))
  return 0


def cmd_ls(args: argparse.Namespace) -> int:
  """List this project's streams."""
  with _client(args).sync() as client:
    streams = client.list_streams()
  if not streams:
    print('no streams (create one: bond create "BTC price + tweets every 5s")')
  for s in streams:
    spec = s["spec"]
    kinds = "+".join(src["type"] for src in spec["sources"])
    print(
      f"{s['stream_id']}  {','.join(spec['symbols']) or '-':<20} {kinds:<22} every {spec['interval_sec']}s"
    )
  return 0


def cmd_rm(args: argparse.Namespace) -> int:
  """Delete streams by id."""
  with _client(args).sync() as client:
    for sid in args.stream_ids:
      client.delete_stream(sid)
      print(f"deleted {sid}")
  return 0


def cmd_listen(args: argparse.Namespace) -> int:
  """Print a stream's events as a live table or as JSON lines."""
  import asyncio

  from bond.cli_listen import listen_main

  try:
    return asyncio.run(listen_main(_client(args), " ".join(args.target), args.from_, args.format))
  except KeyboardInterrupt:
    return 130


def cmd_mcp(args: argparse.Namespace) -> int:
  """Serve Bond's MCP server over stdio for an AI agent host."""
  try:
    from bond.mcp_server import build_server, run_stdio
  except ImportError as err:
    raise BondError(
      f"the MCP server needs the mcp extra: pip install 'bond-streams[mcp]' ({err})"
    ) from err
  run_stdio(build_server(api_url=args.api_url, api_key=args.api_key))
  return 0


def cmd_export(args: argparse.Namespace) -> int:
  """Write a stream's past windows to a Parquet, CSV or JSON lines file."""
  from bond.cli_export import export_main

  with _client(args).sync() as client:
    return export_main(client, args)


def build_parser() -> argparse.ArgumentParser:
  """Return the argument parser of the `bond` command."""
  parser = argparse.ArgumentParser(
    prog="bond", description="Bond: real-time market-data streams from a sentence or a JSON spec."
  )
  parser.add_argument("--version", action="version", version=f"bond {__version__}")
  parser.add_argument("--api-url", default=os.environ.get("BOND_API_URL", "http://localhost:8000"))
  parser.add_argument("--api-key", default=os.environ.get("BOND_API_KEY"))
  sub = parser.add_subparsers(dest="command", metavar="command")

  p = sub.add_parser("up", help="start Kafka, Redis and the platform in the background")
  p.add_argument(
    "--market", choices=["live", "sim"], help="market data source (default: BOND_MARKET)"
  )
  p.add_argument("--infra-only", action="store_true", help="start only Kafka and Redis")
  p.set_defaults(func=cmd_up)
  sub.add_parser("down", help="stop everything `bond up` started").set_defaults(func=cmd_down)
  sub.add_parser("status", help="show the state of each part").set_defaults(func=cmd_status)
  p = sub.add_parser("logs", help="show the parts' logs")
  p.add_argument("parts", nargs="*", help="kafka, redis, sim, worker, api, gateway (default: all)")
  p.add_argument("-f", "--follow", action="store_true")
  p.add_argument("-n", "--lines", type=int, default=40)
  p.set_defaults(func=cmd_logs)
  p = sub.add_parser(
    "kafka",
    help="run a Kafka console tool: console-consumer, console-producer, topics, consumer-groups",
  )
  p.add_argument("tool")
  p.add_argument("args", nargs=argparse.REMAINDER)
  p.set_defaults(func=cmd_kafka)
  p = sub.add_parser("demo", help="start in sim mode, create a demo stream and print its events")
  p.add_argument("sentence", nargs="?", default=DEMO_SENTENCE)
  p.set_defaults(func=cmd_demo, market="sim", infra_only=False)
  p = sub.add_parser("create", help="create a stream from a sentence")
  p.add_argument("sentence", nargs="+")
  p.set_defaults(func=cmd_create)
  sub.add_parser("ls", help="list streams").set_defaults(func=cmd_ls)
  p = sub.add_parser("rm", help="delete streams")
  p.add_argument("stream_ids", nargs="+")
  p.set_defaults(func=cmd_rm)
  p = sub.add_parser("listen", help="print a stream's events (a sentence or a stream id)")
  p.add_argument("target", nargs="+")
  p.add_argument(
    "--from",
    dest="from_",
    help="replay first: now-60s, now-2h (up to BOND_HISTORY_HOURS back), an ISO time or a seq",
  )
  p.add_argument(
    "--format",
    choices=["table", "json"],
    default=None,
    help="default: table on a terminal, json otherwise",
  )
  p.set_defaults(func=cmd_listen)
  p = sub.add_parser(
    "mcp", help="serve the MCP server over stdio for an AI agent (BOND_API_URL, BOND_API_KEY)"
  )
  p.set_defaults(func=cmd_mcp)
  p = sub.add_parser("export", help="write a stream's past windows to .parquet, .csv or .jsonl")
  p.add_argument("stream_id")
  p.add_argument("--from", dest="from_", required=True, help="now-6h, an ISO time or a seq")
  p.add_argument("--to", default=None, help="the last window's end (inclusive); default: now")
  p.add_argument("-o", "--output", required=True, help="the file: btc.parquet, btc.csv, btc.jsonl")
  p.add_argument("--format", choices=["parquet", "csv", "jsonl"], help="default: from -o's name")
  p.add_argument("--limit", type=int, default=None, help="at most this many windows")
  p.set_defaults(func=cmd_export)
  return parser


def main(argv: list[str] | None = None) -> int:
  """Run the `bond` command."""
  import logging

  parser = build_parser()
  args = parser.parse_args(argv)
  # Readiness probes expect refused connections while parts start; keep them off the screen.
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
  if not getattr(args, "func", None):
    parser.print_help()
    return 0
  try:
    return int(args.func(args) or 0)
  except BondError as err:
    print(f"bond: {err.message}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    return 130


if __name__ == "__main__":
  sys.exit(main())
