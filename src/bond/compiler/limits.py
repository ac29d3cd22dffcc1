"""The caps a user's spec must fit as a whole: feeds per stream and per project.

A feed is one upstream subscription a worker runs (aggregate.feeds_for): a pair on one
exchange, a base asset on X, a chain, a custom URL. A stream's cost grows with its feeds
(exchanges x pairs + bases + ...), not with its list lengths, so both are capped:
BOND_MAX_FEEDS_PER_STREAM here (parse_spec and compile_nl call it), and
BOND_MAX_FEEDS_PER_PROJECT across one project's streams (the API calls
`check_project_feeds` before creating a stream). Feeds shared by several of a project's
streams count once: they run once.
"""

from collections.abc import Iterable

from bond.aggregate import feeds_for
from bond.config import Settings
from bond.errors import SpecError
from bond.schemas import StreamSpec


class FeedLimitError(SpecError):
  """A project's streams would run more feeds than BOND_MAX_FEEDS_PER_PROJECT allows."""

  code = "too_many_feeds"


def spec_feeds(spec: StreamSpec, default_exchanges: list[str]) -> list[str]:
  """Return the ids of the feeds a stream runs (ccxt sources without exchanges use the default)."""
  return [feed.id for feed in feeds_for(spec, default_exchanges)]


def spec_feed_count(spec: StreamSpec, default_exchanges: list[str]) -> int:
  """Return how many feeds a stream runs."""
  return len(spec_feeds(spec, default_exchanges))


def stream_feeds_problem(
  spec: StreamSpec, settings: Settings, default_exchanges: list[str] | None = None
) -> str | None:
  """Return why a stream has too many feeds for BOND_MAX_FEEDS_PER_STREAM, or None."""
  count = spec_feed_count(spec, default_exchanges or settings.exchanges)
  limit = settings.bond_max_feeds_per_stream
  if count <= limit:
    return None
  return (
    f"the stream needs {count} feeds (one per exchange and pair, per X symbol, per chain and "
    f"per custom URL); the limit is {limit} (BOND_MAX_FEEDS_PER_STREAM): "
    "ask for fewer symbols or exchanges"
  )


def check_project_feeds(
  spec: StreamSpec,
  others: Iterable[StreamSpec],
  settings: Settings,
  default_exchanges: list[str] | None = None,
) -> int:
  """Return the project's distinct feeds with `spec` added; raise FeedLimitError over the cap.

  `others`: the specs of the project's existing streams.
  """
  default = default_exchanges or settings.exchanges
  feeds: set[str] = set()
  for other in others:
    feeds.update(spec_feeds(other, default))
  before = len(feeds)
  feeds.update(spec_feeds(spec, default))
  limit = settings.bond_max_feeds_per_project
  if len(feeds) > limit:
    raise FeedLimitError(
      f"the project's streams already run {before} feeds and this one would bring them to "
      f"{len(feeds)}; the limit is {limit} (BOND_MAX_FEEDS_PER_PROJECT): delete a stream "
      "or ask for fewer symbols or exchanges",
      feeds=len(feeds),
      limit=limit,
    )
  return len(feeds)
