"""Solana events from a Yellowstone Geyser gRPC endpoint, or seeded synthetic ones (mock).

grpc mode opens one bidirectional `geyser.Geyser/Subscribe` stream with the `x-token`
header (TLS for https:// endpoints), answers the server's pings, and on any stream
error reconnects with backoff, resuming with `from_slot` so no slot is skipped.
"""

import asyncio
import logging
import random
import struct
from collections.abc import Coroutine, Iterable
from typing import Any, Literal

import grpc

from bond.config import Settings, get_settings
from bond.connectors.backoff import Backoff
from bond.connectors.base import Connector, now_ms
from bond.connectors.geyser_pb import geyser_pb2 as pb
from bond.connectors.geyser_pb import geyser_pb2_grpc as pb_grpc
from bond.connectors.solana import (
  LAMPORTS_PER_SOL,
  SYSTEM_PROGRAM,
  SYSTEM_TRANSFER_TAG,
  TOKEN_2022_PROGRAM,
  TOKEN_PROGRAM,
  TOKEN_TRANSFER_TAGS,
  b58encode,
)
from bond.schemas import OnchainEvent

log = logging.getLogger(__name__)

EventType = Literal["tx", "transfer", "block", "account", "metric"]
ALL_TYPES: tuple[EventType, ...] = ("tx", "transfer", "block", "account", "metric")
FILTER = "bond"
# Codes after which the same request cannot succeed: keep retrying, but slowly.
FATAL_CODES = (
  grpc.StatusCode.UNAUTHENTICATED,
  grpc.StatusCode.PERMISSION_DENIED,
  grpc.StatusCode.UNIMPLEMENTED,
)
KEEPALIVE_OPTIONS = [
  ("grpc.keepalive_time_ms", 10_000),
  ("grpc.keepalive_timeout_ms", 5_000),
  ("grpc.keepalive_permit_without_calls", 1),
  ("grpc.http2.max_pings_without_data", 0),
  ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def channel_target(endpoint: str) -> tuple[str, bool]:
  """Return (host:port, use_tls) for `https://h[:p]`, `http://h[:p]` or bare `h:p`."""
  tls = endpoint.startswith("https://")
  rest = endpoint.split("://", 1)[1] if "://" in endpoint else endpoint
  rest = rest.rstrip("/")
  if ":" not in rest.rsplit("]", 1)[-1]:
    rest = f"{rest}:{443 if tls else 80}"
  return rest, tls


def _token_delta(meta: pb.TransactionStatusMeta) -> float | None:
  pre = {b.account_index: b for b in meta.pre_token_balances}
  best: float | None = None
  for post in meta.post_token_balances:
    before = pre.get(post.account_index)
    try:
      old = float(before.ui_token_amount.ui_amount_string or 0) if before else 0.0
      new = float(post.ui_token_amount.ui_amount_string or 0)
    except ValueError:
      continue
    delta = abs(new - old)
    best = delta if best is None else max(best, delta)
  return best


def transfer_amount(info: pb.SubscribeUpdateTransactionInfo) -> tuple[bool, float | None]:
  """Return (is_transfer, amount) from a transaction's top-level instructions.

  SPL Token Transfer/TransferChecked count in token units (the largest token balance
  change); System Transfer in SOL. Inner (CPI) instructions are not inspected.
  """
  message = info.transaction.message
  keys = [b58encode(k) for k in message.account_keys]
  for ix in message.instructions:
    program = keys[ix.program_id_index] if ix.program_id_index < len(keys) else ""
    data = bytes(ix.data)
    if (
      program in (TOKEN_PROGRAM, TOKEN_2022_PROGRAM) and data[:1] and data[0] in TOKEN_TRANSFER_TAGS
    ):
      amount = _token_delta(info.meta)
      if amount is None and data[0] == 12 and len(data) >= 10:
        raw, decimals = struct.unpack_from("<QB", data, 1)
        amount = raw / 10**decimals
      return True, amount
    if program == SYSTEM_PROGRAM and len(data) >= 12:
      tag, lamports = struct.unpack_from("<IQ", data)
      if tag == SYSTEM_TRANSFER_TAG:
        return True, lamports / LAMPORTS_PER_SOL
  return False, None


def parse_update(update: pb.SubscribeUpdate, chain: str, sim: bool) -> OnchainEvent | None:
  """Return the OnchainEvent of one Geyser update, or None for pings, slots and others.

  Sample (SubscribeUpdate, protobuf text format):
  filters: "bond" created_at { seconds: 1761053405 nanos: 12000000 }
  transaction { slot: 300000123 transaction { signature: "\\x8f..." is_vote: false
    transaction { message { account_keys: "..." instructions { program_id_index: 3
    data: "\\x0c..." } } } meta { fee: 5000 pre_token_balances { ... } } } }
  """
  ts = update.created_at.ToMilliseconds() if update.HasField("created_at") else now_ms()
  kind = update.WhichOneof("update_oneof")
  base: dict[str, Any] = {"ts": ts, "ts_ingest": now_ms(), "sim": sim, "chain": chain}
  if kind == "transaction":
    info = update.transaction.transaction
    if info.is_vote:
      return None
    is_transfer, amount = transfer_amount(info)
    return OnchainEvent(
      **base,
      type="transfer" if is_transfer else "tx",
      slot=update.transaction.slot,
      signature=b58encode(info.signature),
      amount=amount,
    )
  if kind == "block_meta":
    return OnchainEvent(
      **base, type="block", slot=update.block_meta.slot, signature=update.block_meta.blockhash
    )
  if kind == "block":
    return OnchainEvent(
      **base, type="block", slot=update.block.slot, signature=update.block.blockhash
    )
  if kind == "account":
    acc = update.account.account
    sig = b58encode(acc.txn_signature) if acc.HasField("txn_signature") else None
    return OnchainEvent(
      **base,
      type="account",
      slot=update.account.slot,
      signature=sig,
      amount=acc.lamports / LAMPORTS_PER_SOL,
    )
  return None


class GeyserFeed(Connector):
  """Solana OnchainEvents from Geyser gRPC (`mode="grpc"`) or a seeded generator (`mode="mock"`).

  `async with GeyserFeed(mode="grpc", endpoint=peer.endpoint, x_token="t") as feed:
  async for ev in feed: ...` yields OnchainEvent (and Heartbeat with exchange=chain).
  `stats`: events, updates, pings, disconnects, errors, resumes, unavailable_slots.
  """

  source = "onchain"

  def __init__(
    self,
    mode: Literal["mock", "grpc"] | None = None,
    endpoint: str | None = None,
    x_token: str | None = None,
    event_types: Iterable[str] = ("tx", "transfer", "block"),
    accounts: list[str] | None = None,
    owners: list[str] | None = None,
    commitment: int = pb.CONFIRMED,
    rate: float | None = None,
    seed: int = 42,
    chain: str = "sol",
    settings: Settings | None = None,
    backoff: Backoff | None = None,
    heartbeat_sec: float = 1.0,
  ) -> None:
    super().__init__(heartbeat_sec=heartbeat_sec)
    self.settings = settings or get_settings()
    self.mode = mode or self.settings.onchain_mode
    self.endpoint = endpoint or self.settings.grpc_endpoint
    self.x_token = x_token if x_token is not None else self.settings.grpc_x_token
    self.event_types = [t for t in event_types if t in ALL_TYPES]
    self.accounts = accounts or []
    self.owners = owners or []
    self.commitment = commitment
    self.rate = rate if rate is not None else self.settings.bond_onchain_rate
    self.seed = seed
    self.chain = chain
    self.sim = self.mode == "mock"
    self.backoff = backoff or Backoff(base_sec=0.5, max_sec=30.0)
    self.stats.update(updates=0, pings=0, disconnects=0, resumes=0, unavailable_slots=0)
    self.last_slot: int | None = None
    self._complete_slot: int | None = None
    self._slot_keys: set[tuple[Any, ...]] = set()
    self._channel: grpc.aio.Channel | None = None

  def feeds(self) -> Iterable[tuple[str, str]]:
    return [(self.chain, "")]

  def workers(self) -> Iterable[Coroutine[Any, Any, None]]:
    return [self._mock_loop() if self.mode == "mock" else self._grpc_loop()]

  async def _open(self) -> None:
    if self.mode != "grpc":
      return
    target, tls = channel_target(self.endpoint)
    if tls:
      self._channel = grpc.aio.secure_channel(
        target, grpc.ssl_channel_credentials(), options=KEEPALIVE_OPTIONS
      )
    else:
      self._channel = grpc.aio.insecure_channel(target, options=KEEPALIVE_OPTIONS)

  async def _close(self) -> None:
    channel, self._channel = self._channel, None
    if channel is not None:
      await channel.close()

  # ------------------------------------------------------------------ grpc

  def subscribe_request(
    self, from_slot: int | None = None, ping_id: int | None = None
  ) -> pb.SubscribeRequest:
    """Build the SubscribeRequest for the configured event types (and resume slot)."""
    req = pb.SubscribeRequest(commitment=self.commitment)  # type: ignore[arg-type]
    if {"tx", "transfer"} & set(self.event_types):
      req.transactions[FILTER].CopyFrom(
        pb.SubscribeRequestFilterTransactions(vote=False, failed=False)
      )
    if "block" in self.event_types:
      req.blocks_meta[FILTER].SetInParent()
    if "account" in self.event_types and (self.accounts or self.owners):
      req.accounts[FILTER].CopyFrom(
        pb.SubscribeRequestFilterAccounts(account=self.accounts, owner=self.owners)
      )
    if from_slot is not None:
      req.from_slot = from_slot
    if ping_id is not None:
      req.ping.id = ping_id
    return req

  def _resume_slot(self) -> int | None:
    if self.last_slot is None:
      return None
    # A slot whose block arrived is complete; otherwise replay it and drop what we have.
    return self.last_slot + 1 if self._complete_slot == self.last_slot else self.last_slot

  async def _grpc_loop(self) -> None:
    failures = 0
    while True:
      from_slot = self._resume_slot()
      try:
        got = await self._subscribe_once(from_slot)
        failures = 0 if got else failures + 1
        self.stats["disconnects"] += 1
        log.warning("geyser stream ended by the server; reconnecting")
      except grpc.aio.AioRpcError as exc:
        self.stats["disconnects"] += 1
        failures += 1
        code = exc.code()
        if code == grpc.StatusCode.INVALID_ARGUMENT and from_slot is not None:
          # The endpoint no longer keeps that slot: start from now and say so.
          self.stats["unavailable_slots"] += 1
          log.error(
            "geyser cannot replay from slot %d (%s); resuming live", from_slot, exc.details()
          )
          self.last_slot = self._complete_slot = None
          continue
        if code in FATAL_CODES:
          self.stats["errors"] += 1
          log.error("geyser refused the subscription: %s %s", code.name, exc.details())
          await asyncio.sleep(max(self.backoff.max_sec, 1.0))
          continue
        delay = self.backoff.delay(failures)
        log.warning(
          "geyser stream lost (%s); resume from slot %s in %.2fs",
          code.name,
          self._resume_slot(),
          delay,
        )
        await asyncio.sleep(delay)

  async def _subscribe_once(self, from_slot: int | None) -> bool:
    assert self._channel is not None
    stub = pb_grpc.GeyserStub(self._channel)
    metadata = (("x-token", self.x_token),) if self.x_token else None
    call = stub.Subscribe(metadata=metadata)
    got_data = False
    ping_id = 0
    try:
      await call.write(self.subscribe_request(from_slot))
      if from_slot is not None:
        self.stats["resumes"] += 1
      while True:
        update = await call.read()
        if update is grpc.aio.EOF:
          return got_data
        kind = update.WhichOneof("update_oneof")
        if kind == "ping":
          # Answer so proxies and the server keep the stream open; same filters, no from_slot.
          ping_id += 1
          self.stats["pings"] += 1
          await call.write(self.subscribe_request(ping_id=ping_id))
          continue
        got_data = True
        self.stats["updates"] += 1
        await self._handle(update)
    finally:
      call.cancel()

  async def _handle(self, update: pb.SubscribeUpdate) -> None:
    ev = parse_update(update, self.chain, sim=False)
    if ev is None or ev.slot is None:
      return
    if self.last_slot is None or ev.slot > self.last_slot:
      self.last_slot = ev.slot
      self._slot_keys.clear()
    key = (ev.type, ev.slot, ev.signature)
    if ev.slot == self.last_slot:
      if key in self._slot_keys:
        self.stats.setdefault("duplicates_dropped", 0)
        self.stats["duplicates_dropped"] += 1
        return
      self._slot_keys.add(key)
    if ev.type == "block":
      self._complete_slot = ev.slot
    if ev.type in self.event_types:
      await self.emit(ev, (self.chain, ""))

  # ------------------------------------------------------------------ mock

  async def _mock_loop(self) -> None:
    """Emit seeded synthetic events at `rate`/s with slots advancing every 400 ms."""
    rng = random.Random(self.seed)
    types = self.event_types or ["tx"]
    start_ms = now_ms()
    first_slot = 300_000_000 + rng.randrange(1_000_000)
    interval = 1.0 / self.rate if self.rate > 0 else 1.0
    while True:
      await asyncio.sleep(interval if self.rate > 0 else 3600)
      ts = now_ms()
      slot = first_slot + (ts - start_ms) // 400
      kind: EventType = rng.choice(types)  # type: ignore[assignment]
      amount: float | None = None
      signature: str | None = b58encode(rng.randbytes(64))
      if kind == "transfer":
        amount = round(rng.lognormvariate(3.0, 2.0), 6)
      elif kind == "account":
        amount = round(rng.lognormvariate(0.0, 2.0), 9)
      elif kind == "block":
        signature = b58encode(rng.randbytes(32))
      elif kind == "metric":
        signature, amount = None, round(rng.gauss(3500, 400), 1)  # transactions per second
      ev = OnchainEvent(
        ts=ts,
        ts_ingest=ts,
        sim=True,
        chain=self.chain,
        type=kind,
        slot=slot,
        signature=signature,
        amount=amount,
      )
      self.last_slot = slot
      await self.emit(ev, (self.chain, ""))
