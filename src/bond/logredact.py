"""Keep secrets out of the logs: stream tokens travel in query strings, which servers log."""

import logging
import re

_TOKEN = re.compile(r"(token=)[^&\s\"']+")
LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.protocols")


def redact(text: str) -> str:
  """Return `text` with every `token=...` value replaced by `token=<redacted>`."""
  return _TOKEN.sub(r"\1<redacted>", text)


class RedactTokens(logging.Filter):
  """A logging filter that redacts tokens from the message and its arguments."""

  def filter(self, record: logging.LogRecord) -> bool:
    if isinstance(record.msg, str) and "token=" in record.msg:
      record.msg = redact(record.msg)
    if isinstance(record.args, tuple) and record.args:
      record.args = tuple(
        redact(a) if isinstance(a, str) and "token=" in a else a for a in record.args
      )
    return True


def install() -> None:
  """Attach the filter to the server loggers that print request lines (idempotent)."""
  for name in LOGGERS:
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
      logger.addFilter(RedactTokens())
