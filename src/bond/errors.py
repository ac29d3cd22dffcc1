"""One error base for Bond, with kinds that carry data and say whether a retry can help."""


class BondError(Exception):
  """Base of every error Bond raises on purpose."""

  retriable: bool = False
  code: str = "bond_error"

  def __init__(self, message: str, **data: object) -> None:
    super().__init__(message)
    self.message = message
    self.data = data


class ConfigError(BondError):
  """The environment or settings cannot work; the message says what to change."""

  code = "config_error"


class SpecError(BondError):
  """A stream spec or sentence that cannot be turned into a stream."""

  code = "invalid_spec"


class NotFoundError(BondError):
  """An unknown or deleted stream."""

  code = "not_found"


class LimitError(BondError):
  """A project is over its stream limit."""

  code = "too_many_streams"


class UpstreamError(BondError):
  """A source (exchange, X, gRPC endpoint, custom feed) failed; retrying may help."""

  code = "upstream_error"
  retriable = True


class DevStackError(BondError):
  """The local dev stack cannot start; the message says why and what to do."""

  code = "devstack_error"
