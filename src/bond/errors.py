"""One error base for Bond, with kinds that carry data and say whether a retry can help.

Each kind carries the HTTP status the REST API answers it with (`http_status`) and a
machine `code`; the API's handler reads both from the class, never from an isinstance ladder.
"""


class BondError(Exception):
  """Base of every error Bond raises on purpose."""

  retriable: bool = False
  code: str = "bond_error"
  http_status: int = 500

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
  http_status = 422


class NotFoundError(BondError):
  """An unknown or deleted stream."""

  code = "not_found"
  http_status = 404


class LimitError(BondError):
  """A project is over its stream limit."""

  code = "too_many_streams"
  http_status = 429


class UpstreamError(BondError):
  """A source (exchange, X, gRPC endpoint, custom feed) failed; retrying may help."""

  code = "upstream_error"
  http_status = 503
  retriable = True


class DevStackError(BondError):
  """The local dev stack cannot start; the message says why and what to do."""

  code = "devstack_error"


class ApiError(BondError):
  """A request the REST API refuses as sent: the kind sets the status and the code."""

  code = "bad_request"
  http_status = 400

  def __init__(
    self,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
  ) -> None:
    super().__init__(message)
    self.headers = headers
    self.extra = extra or {}


class BadJsonError(ApiError):
  """A body that is not one JSON object."""

  code = "bad_json"


class UnauthorizedError(ApiError):
  """No API key, or an unknown one."""

  code = "unauthorized"
  http_status = 401

  def __init__(self, message: str) -> None:
    super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class BodyTooLargeError(ApiError):
  """A body over the API's size limit."""

  code = "body_too_large"
  http_status = 413


class UnsupportedMediaError(ApiError):
  """A body that is not JSON."""

  code = "unsupported_media_type"
  http_status = 415


class InvalidRequestError(ApiError):
  """A JSON body of the wrong shape."""

  code = "invalid_request"
  http_status = 422


class RateLimitError(ApiError):
  """Too many requests for one API key; retry after `retry_after_sec`."""

  code = "rate_limited"
  http_status = 429
  retriable = True

  def __init__(self, message: str, retry_after_sec: int) -> None:
    super().__init__(message, headers={"Retry-After": str(retry_after_sec)})
    self.retry_after_sec = retry_after_sec


class BusyError(ApiError):
  """The API is at its bound of concurrent costly requests; retry shortly."""

  code = "busy"
  http_status = 503
  retriable = True

  def __init__(self, message: str) -> None:
    super().__init__(message, headers={"Retry-After": "1"})
