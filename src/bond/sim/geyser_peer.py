"""A local Yellowstone Geyser gRPC server (grpc.aio) producing seeded Solana updates.

Slots advance every `slot_ms`; each slot's content (transactions, token transfers,
account updates, block meta) is derived from (seed, slot), so a client resuming with
`from_slot` gets exactly what it missed. `kill_streams()` ends every open Subscribe
call with UNAVAILABLE, to test resume.

    async with GeyserPeer(port=0, slot_ms=50, x_token="secret") as peer:
      endpoint = peer.endpoint  # "http://127.0.0.1:<port>"
"""

import asyncio
import contextlib
import logging
import random
import struct
import time
from collections.abc import AsyncIterator
from typing import Any, Self

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bond.connectors.geyser_pb import geyser_pb2 as pb
from bond.connectors.geyser_pb import geyser_pb2_grpc as pb_grpc
from bond.connectors.solana import SYSTEM_PROGRAM, TOKEN_PROGRAM, b58decode

log = logging.getLogger(__name__)

USDC_MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
DEX_PROGRAM = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4"


class GeyserPeer:
  """A `geyser.Geyser` server on 127.0.0.1 for the Geyser connector's tests and demos."""

  def __init__(
    self,
    port: int = 0,
    seed: int = 42,
    slot_ms: int = 400,
    txs_per_slot: int = 4,
    transfer_ratio: float = 0.5,
    accounts_per_slot: int = 1,
    x_token: str | None = None,
    ping_sec: float = 5.0,
    start_slot: int = 300_000_000,
    history_slots: int = 5000,
  ) -> None:
    self.port = port
    self.seed = seed
    self.slot_ms = slot_ms
    self.txs_per_slot = txs_per_slot
    self.transfer_ratio = transfer_ratio
    self.accounts_per_slot = accounts_per_slot
    self.x_token = x_token
    self.ping_sec = ping_sec
    self.start_slot = start_slot
    self.history_slots = history_slots
    self.slot = start_slot
    self.stats: dict[str, Any] = {"subscriptions": 0, "from_slots": [], "pongs": 0, "killed": 0}
    self._server: grpc.aio.Server | None = None
    self._clock: asyncio.Task[None] | None = None
    self._tick = asyncio.Condition()
    self._kill: set[asyncio.Event] = set()
    self._t0 = 0.0

  @property
  def endpoint(self) -> str:
    """Return the plaintext endpoint URL (`http://127.0.0.1:<port>`)."""
    return f"http://127.0.0.1:{self.port}"

  async def start(self) -> None:
    """Start serving and advancing slots."""
    if self._server is not None:
      return
    self._server = grpc.aio.server()
    pb_grpc.add_GeyserServicer_to_server(_Servicer(self), self._server)
    self.port = self._server.add_insecure_port(f"127.0.0.1:{self.port}")
    await self._server.start()
    self._t0 = time.time()
    self._clock = asyncio.create_task(self._advance())

  async def stop(self) -> None:
    """Stop the server; idempotent."""
    server, clock = self._server, self._clock
    self._server, self._clock = None, None
    if clock is not None:
      clock.cancel()
      with contextlib.suppress(asyncio.CancelledError):
        await clock
    if server is not None:
      await server.stop(grace=0.2)

  async def __aenter__(self) -> Self:
    await self.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.stop()

  def kill_streams(self) -> int:
    """End every open Subscribe stream with UNAVAILABLE; return how many."""
    events = list(self._kill)
    for event in events:
      event.set()
    self.stats["killed"] += len(events)
    return len(events)

  async def _advance(self) -> None:
    while True:
      await asyncio.sleep(self.slot_ms / 1000)
      async with self._tick:
        self.slot += 1
        self._tick.notify_all()

  def slot_time_ms(self, slot: int) -> int:
    """Return the wall-clock time of a slot, epoch ms."""
    return int(self._t0 * 1000 + (slot - self.start_slot) * self.slot_ms)

  # ------------------------------------------------------------------ content

  def slot_updates(self, slot: int, request: pb.SubscribeRequest) -> list[pb.SubscribeUpdate]:
    """Return the updates of one slot that match the request's filters, in order."""
    rng = random.Random(f"{self.seed}:{slot}")
    created = Timestamp()
    created.FromMilliseconds(self.slot_time_ms(slot))
    out: list[pb.SubscribeUpdate] = []
    signatures: list[bytes] = []
    for index in range(self.txs_per_slot):
      info = self._transaction(rng, index, rng.random() < self.transfer_ratio)
      signatures.append(info.signature)
      if request.transactions:
        upd = pb.SubscribeUpdate(filters=list(request.transactions), created_at=created)
        upd.transaction.CopyFrom(pb.SubscribeUpdateTransaction(transaction=info, slot=slot))
        out.append(upd)
    for index in range(self.accounts_per_slot):
      account = pb.SubscribeUpdateAccountInfo(
        pubkey=rng.randbytes(32),
        lamports=rng.randrange(1_000_000, 50 * 10**9),
        owner=b58decode(TOKEN_PROGRAM),
        data=rng.randbytes(16),
        write_version=slot * 100 + index,
        txn_signature=signatures[index % len(signatures)] if signatures else None,
      )
      if request.accounts:
        upd = pb.SubscribeUpdate(filters=list(request.accounts), created_at=created)
        upd.account.CopyFrom(pb.SubscribeUpdateAccount(account=account, slot=slot))
        out.append(upd)
    blockhash = rng.randbytes(32).hex()
    if request.blocks_meta:
      upd = pb.SubscribeUpdate(filters=list(request.blocks_meta), created_at=created)
      upd.block_meta.CopyFrom(
        pb.SubscribeUpdateBlockMeta(
          slot=slot,
          blockhash=blockhash,
          block_time=pb.UnixTimestamp(timestamp=self.slot_time_ms(slot) // 1000),
          block_height=pb.BlockHeight(block_height=slot - 20_000_000),
          parent_slot=slot - 1,
          executed_transaction_count=self.txs_per_slot,
        )
      )
      out.append(upd)
    if request.blocks:
      upd = pb.SubscribeUpdate(filters=list(request.blocks), created_at=created)
      upd.block.CopyFrom(
        pb.SubscribeUpdateBlock(
          slot=slot,
          blockhash=blockhash,
          parent_slot=slot - 1,
          executed_transaction_count=self.txs_per_slot,
          block_time=pb.UnixTimestamp(timestamp=self.slot_time_ms(slot) // 1000),
        )
      )
      out.append(upd)
    if request.slots:
      upd = pb.SubscribeUpdate(filters=list(request.slots), created_at=created)
      upd.slot.CopyFrom(
        pb.SubscribeUpdateSlot(slot=slot, parent=slot - 1, status=pb.SLOT_CONFIRMED)
      )
      out.append(upd)
    return out

  def _transaction(
    self, rng: random.Random, index: int, transfer: bool
  ) -> pb.SubscribeUpdateTransactionInfo:
    payer, src, dst = rng.randbytes(32), rng.randbytes(32), rng.randbytes(32)
    signature = rng.randbytes(64)
    meta = pb.TransactionStatusMeta(
      fee=5000,
      pre_balances=[10**9, 2039280, 2039280],
      post_balances=[10**9 - 5000, 2039280, 2039280],
    )
    if transfer and rng.random() < 0.8:
      # SPL Token TransferChecked: tag 12, u64 amount, u8 decimals; balances move too.
      raw = rng.randrange(1_000_000, 50_000 * 10**6)
      program = TOKEN_PROGRAM
      data = bytes([12]) + struct.pack("<QB", raw, 6)
      before = rng.randrange(raw, raw * 10)
      meta.pre_token_balances.extend([self._balance(1, before), self._balance(2, 0)])
      meta.post_token_balances.extend([self._balance(1, before - raw), self._balance(2, raw)])
    elif transfer:
      lamports = rng.randrange(10**7, 200 * 10**9)
      program = SYSTEM_PROGRAM
      data = struct.pack("<IQ", 2, lamports)
      meta.pre_balances[:] = [lamports + 10**9, 0, 0]
      meta.post_balances[:] = [10**9 - 5000, lamports, 0]
    else:
      program = DEX_PROGRAM
      data = rng.randbytes(24)
    message = pb.Message(
      header=pb.MessageHeader(num_required_signatures=1),
      account_keys=[payer, src, dst, b58decode(program)],
      recent_blockhash=rng.randbytes(32),
      instructions=[
        pb.CompiledInstruction(program_id_index=3, accounts=bytes([1, 2, 0]), data=data)
      ],
    )
    return pb.SubscribeUpdateTransactionInfo(
      signature=signature,
      is_vote=False,
      transaction=pb.Transaction(signatures=[signature], message=message),
      meta=meta,
      index=index,
    )

  @staticmethod
  def _balance(account_index: int, raw: int) -> pb.TokenBalance:
    ui = raw / 10**6
    return pb.TokenBalance(
      account_index=account_index,
      mint=USDC_MINT,
      owner="",
      program_id=TOKEN_PROGRAM,
      ui_token_amount=pb.UiTokenAmount(
        ui_amount=ui,
        decimals=6,
        amount=str(raw),
        ui_amount_string=f"{ui:.6f}".rstrip("0").rstrip("."),
      ),
    )


class _Servicer(pb_grpc.GeyserServicer):
  def __init__(self, peer: GeyserPeer) -> None:
    self.peer = peer

  async def _auth(self, context: grpc.aio.ServicerContext) -> None:
    if self.peer.x_token is None:
      return
    token = dict(context.invocation_metadata() or ()).get("x-token")
    if token != self.peer.x_token:
      await context.abort(grpc.StatusCode.UNAUTHENTICATED, "x-token is missing or wrong")

  async def Ping(
    self, request: pb.PingRequest, context: grpc.aio.ServicerContext
  ) -> pb.PongResponse:
    await self._auth(context)
    return pb.PongResponse(count=request.count)

  async def GetSlot(
    self, request: pb.GetSlotRequest, context: grpc.aio.ServicerContext
  ) -> pb.GetSlotResponse:
    await self._auth(context)
    return pb.GetSlotResponse(slot=self.peer.slot)

  async def GetVersion(
    self, request: pb.GetVersionRequest, context: grpc.aio.ServicerContext
  ) -> pb.GetVersionResponse:
    return pb.GetVersionResponse(version='{"version": "bond-geyser-peer"}')

  async def Subscribe(
    self, request_iterator: AsyncIterator[pb.SubscribeRequest], context: grpc.aio.ServicerContext
  ) -> AsyncIterator[pb.SubscribeUpdate]:
    peer = self.peer
    await self._auth(context)
    first = await anext(aiter(request_iterator), None)
    if first is None:
      return
    peer.stats["subscriptions"] += 1
    outbox: asyncio.Queue[pb.SubscribeUpdate] = asyncio.Queue()
    kill = asyncio.Event()
    peer._kill.add(kill)
    reader = asyncio.create_task(self._read_requests(request_iterator, outbox))
    try:
      if first.HasField("from_slot"):
        peer.stats["from_slots"].append(first.from_slot)
        oldest = max(peer.start_slot, peer.slot - peer.history_slots)
        if first.from_slot < oldest:
          await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"broadcast from {first.from_slot} is not available, last available: {oldest}",
          )
        next_slot = first.from_slot
      else:
        next_slot = peer.slot
      last_ping = time.monotonic()
      while not kill.is_set():
        while not outbox.empty():
          yield outbox.get_nowait()
        if next_slot <= peer.slot:
          for update in peer.slot_updates(next_slot, first):
            yield update
          next_slot += 1
          continue
        if time.monotonic() - last_ping >= peer.ping_sec:
          last_ping = time.monotonic()
          ping = pb.SubscribeUpdate(filters=[])
          ping.ping.SetInParent()
          yield ping
        async with peer._tick:
          with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(peer._tick.wait(), timeout=0.05)
      await context.abort(grpc.StatusCode.UNAVAILABLE, "stream killed by the test peer")
    finally:
      peer._kill.discard(kill)
      reader.cancel()

  async def _read_requests(
    self, requests: AsyncIterator[pb.SubscribeRequest], outbox: asyncio.Queue[pb.SubscribeUpdate]
  ) -> None:
    async for req in requests:
      if req.HasField("ping"):
        self.peer.stats["pongs"] += 1
        pong = pb.SubscribeUpdate(filters=[])
        pong.pong.id = req.ping.id
        await outbox.put(pong)
