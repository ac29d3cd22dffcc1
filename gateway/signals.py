"""SIGINT/SIGTERM under uvicorn: close the gateway's sockets with 1001 first, then exit."""

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any


def hook_signals(
  go_away: Callable[[], Awaitable[None]], closing: Callable[[], bool]
) -> Callable[[], None]:
  """Chain to uvicorn's exit handler after `go_away()`; return a function that unhooks."""
  if threading.current_thread() is not threading.main_thread():
    return lambda: None
  loop = asyncio.get_running_loop()
  installed: dict[int, tuple[Any, Any]] = {}
  for sig in (signal.SIGINT, signal.SIGTERM):
    prev = signal.getsignal(sig)
    if getattr(prev, "__name__", "") != "handle_exit":  # chain only to uvicorn's handler
      continue

    def handler(signum: int, frame: FrameType | None, prev: Any = prev) -> None:
      # uvicorn's own shutdown would close sockets with 1012; a second signal exits at once.
      if closing():
        prev(signum, frame)
        return

      def then_exit(task: "asyncio.Task[None]") -> None:
        prev(signum, frame)

      async def leave() -> None:
        await go_away()

      loop.call_soon_threadsafe(lambda: loop.create_task(leave()).add_done_callback(then_exit))

    signal.signal(sig, handler)
    installed[sig] = (handler, prev)

  def restore() -> None:
    for sig, (handler, prev) in installed.items():
      if signal.getsignal(sig) is handler:
        signal.signal(sig, prev)

  return restore
