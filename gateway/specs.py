"""What a create or compile request asks for: its body turned into a checked StreamSpec."""

from starlette.requests import Request

from bond.compiler import compile_nl, parse_spec
from bond.config import Settings
from bond.errors import InvalidRequestError, SpecError
from bond.gateway.cpu import CpuPool
from bond.gateway.errors import read_json_object
from bond.schemas import CcxtSource, StreamSpec


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


async def spec_from_body(request: Request, settings: Settings, cpu: CpuPool) -> StreamSpec:
  """Read `{"natural_language": ...}` or `{"spec": ...}` and return the checked spec."""
  data = await read_json_object(request)
  extra = sorted(set(data) - {"natural_language", "spec"})
  if ("natural_language" in data) == ("spec" in data) or extra:
    unknown = f" (unknown fields: {', '.join(extra)})" if extra else ""
    raise InvalidRequestError(
      'send exactly one of "natural_language" (a sentence such as "BTC price + tweets every 5s") '
      f'or "spec" (a JSON stream spec){unknown}'
    )
  if "natural_language" in data:
    text = data["natural_language"]
    if not isinstance(text, str):
      raise InvalidRequestError("natural_language must be a string (a sentence)")
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
  return explicit(spec, settings.exchanges)
