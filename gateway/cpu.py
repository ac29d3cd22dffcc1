"""A small pool of threads for the REST API's CPU-bound work (compiling, symbol hints).

The event loop never runs that work itself. At most `threads` jobs run at once and one
more request each may wait for a thread; beyond that the API answers 503 (busy). A job
over its time budget answers at once; its thread finishes in the background and is
counted as busy until it does, so slow inputs cannot pile up threads.
"""

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from bond.errors import BusyError

T = TypeVar("T")


class CpuPool:
  """Runs functions in a bounded thread pool with a time budget each."""

  def __init__(self, threads: int, timeout_sec: float) -> None:
    self.threads = threads
    self.timeout_sec = timeout_sec
    self._executor = ThreadPoolExecutor(threads, thread_name_prefix="bond-cpu")
    self._busy = 0

  async def __call__(self, fn: Callable[[], T], /) -> T:
    """Return fn() computed in a worker thread; TimeoutError when it took over the budget."""
    if self._busy >= 2 * self.threads:
      raise BusyError(
        f"the API is busy with {self._busy} costly requests (BOND_COMPILE_THREADS="
        f"{self.threads}); retry in a moment"
      )
    self._busy += 1
    took: list[float] = []

    def timed() -> T:
      started = time.perf_counter()
      try:
        return fn()
      finally:
        took.append(time.perf_counter() - started)

    future = asyncio.get_running_loop().run_in_executor(self._executor, timed)
    future.add_done_callback(self._done)
    result = await asyncio.wait_for(asyncio.shield(future), self.timeout_sec)
    # A job holds the GIL in slices: it may finish before the loop sees its deadline.
    if took and took[0] > self.timeout_sec:
      raise TimeoutError
    return result

  def _done(self, future: "asyncio.Future[Any]") -> None:
    self._busy -= 1
    if not future.cancelled():
      future.exception()  # retrieved: a job that outlived its caller logs nothing

  def close(self) -> None:
    """Stop taking jobs; running ones finish in the background."""
    self._executor.shutdown(wait=False, cancel_futures=True)
