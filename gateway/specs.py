"""What a create or compile request asks for: its body turned into a checked StreamSpec."""

from starlette.requests import Request

from bond.compiler import compile_nl, parse_spec
from bond.compiler.backfill import parse_duration, split_backfill
from bond.config import Settings
from bond.errors import InvalidRequestError, SpecError
from bond.gateway.cpu import CpuPool
from bond.gateway.errors import read_json_object
from bond.schemas import CcxtSource, StreamSpec
from bond.topics import RAW_TOPICS
from bond.windowing import feeds_for


def check_exchanges(spec: StreamSpec, allowed: list[str]) -> None:
  """Refuse a spec naming an exchange this deployment does not run."""
  named = list(spec.exchanges or [])
  for src in spec.sources:
    if isinstance(src, CcxtSource):
      named += src.exchanges or []
  off = [name for name in dict.fromkeys(named) if name not in allowed]
  if off:
    raise SpecError(
      f"exchanges: {', '.join(map(repr, off))} not available here; available: {', '.join(allowed)}"
    )


def explicit(spec: StreamSpec, default: list[str]) -> StreamSpec:
  """Return the spec with its exchanges spelled out, so its id does not hang on BOND_EXCHANGES."""
  ccxt = [s for s in spec.sources if isinstance(s, CcxtSource)]
  if spec.exchanges is None and any(not s.exchanges for s in ccxt):
    return spec.model_copy(update={"exchanges": list(default)})
  return spec


def check_backfill(seconds: int, spec: StreamSpec, settings: Settings) -> int:
  """Return the backfill seconds, or raise SpecError naming the bound it is over."""
  cap = settings.bond_max_backfill_sec
  if seconds > cap:
    raise SpecError(
      f"backfill: {seconds}s is over this deployment's limit of {cap}s (BOND_MAX_BACKFILL_SEC)"
    )
  sources = {f.source for f in feeds_for(spec, settings.exchanges)}
  for source in sorted(sources):
    retention_ms = RAW_TOPICS[source].retention_ms
    if retention_ms is not None and seconds * 1000 > retention_ms:
      raise SpecError(
        f"backfill: {seconds}s is over the {retention_ms // 1000}s the raw topic "
        f"{RAW_TOPICS[source].name} keeps (its retention)"
      )
  return seconds


async def spec_from_body(
  request: Request, settings: Settings, cpu: CpuPool
) -> tuple[StreamSpec, int | None]:
  """Read `{"natural_language": ...}` or `{"spec": ...}` (and an optional `"backfill"`).

  Return the checked spec and the backfill seconds asked for (by the field or by a sentence
  ending "... for the last hour"), None when none was.
  """
  data = await read_json_object(request)
  extra = sorted(set(data) - {"natural_language", "spec", "backfill"})
  if ("natural_language" in data) == ("spec" in data) or extra:
    unknown = f" (unknown fields: {', '.join(extra)})" if extra else ""
    raise InvalidRequestError(
      'send exactly one of "natural_language" (a sentence such as "BTC price + tweets every 5s") '
      f'or "spec" (a JSON stream spec), and optionally "backfill" (such as "1h"){unknown}'
    )
  backfill = None if data.get("backfill") is None else parse_duration(data["backfill"])
  if "natural_language" in data:
    text = data["natural_language"]
    if not isinstance(text, str):
      raise InvalidRequestError("natural_language must be a string (a sentence)")
    text, asked = split_backfill(text)
    if asked is not None:
      if backfill is not None and backfill != asked:
        raise SpecError(
          f'backfill: the sentence asks for {asked}s and "backfill" for {backfill}s; give one'
        )
      backfill = asked
    exchanges = settings.exchanges
    try:
      spec = await cpu(lambda: compile_nl(text, exchanges=exchanges, settings=settings))
    except TimeoutError:
      raise SpecError(
        f"the sentence took over {cpu.timeout_sec:g}s to compile (BOND_COMPILE_TIMEOUT_SEC); "
        "shorten it or send a spec"
      ) from None
  else:
    spec = parse_spec(data["spec"], settings)
  check_exchanges(spec, settings.exchanges)
  spec = explicit(spec, settings.exchanges)
  if backfill is not None:
    check_backfill(backfill, spec, settings)
  return spec, backfill
