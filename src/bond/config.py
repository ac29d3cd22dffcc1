"""One Settings object holding every environment variable Bond reads (see ARCHITECTURE.md)."""

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bond.errors import ConfigError

DEFAULT_SECRET = "dev-secret-change-me"
MIN_SECRET_BYTES = 32


class Settings(BaseSettings):
  """Bond's configuration, read from the environment once and passed down."""

  model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

  kafka_bootstrap: str = "localhost:9092"
  redis_url: str = "redis://localhost:6379"
  ws_host: str = "localhost:8080"
  api_host: str = "127.0.0.1"
  api_port: int = 8000
  ws_port: int = 8080
  bond_secret: str = DEFAULT_SECRET
  bond_secret_previous: str | None = None
  bond_env: str = "dev"
  bond_max_streams: int = Field(5, ge=1)
  bond_ring_seconds: int = Field(60, ge=1)
  bond_ring_maxlen: int = Field(1000, ge=1)
  # One window's JSON; bigger ones are dropped and counted (Kafka refuses records over ~1 MiB).
  bond_max_window_bytes: int = Field(524_288, ge=1024, le=1_000_000)
  bond_token_ttl: int = Field(3600, ge=1)
  bond_lateness_ms: int = Field(1000, ge=0)
  bond_pane_ms: int = Field(1000, ge=100)
  # A worker logs the stack of its event loop when it is held this long (/bond/stats "loop").
  bond_stall_ms: int = Field(100, ge=10)
  bond_max_backfill_sec: int = Field(6 * 3600, ge=0)  # history a create may ask for (0: none)
  bond_market: Literal["live", "sim"] = "live"
  bond_exchanges: str = "binance,okx,bybit"
  bond_ccxt_mode: Literal["rest", "ws"] = "ws"
  bond_poll_sec: float = Field(5.0, gt=0)
  bond_api_keys: str = ""
  # The API's /mcp endpoint: where its tools call the API back (default this API on loopback),
  # and the Host headers it answers (DNS-rebinding guard; "" turns it off behind a proxy).
  bond_mcp_api_url: str = ""
  bond_mcp_hosts: str = "127.0.0.1:*,localhost:*,[::1]:*"
  bond_ws_queue: int = Field(256, ge=1)
  # -- exposure limits (README "Security"): sockets, tokens, API fairness
  bond_ws_queue_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024)
  bond_ws_max_frame_bytes: int = Field(4096, ge=256, le=1024 * 1024)
  bond_ws_max_per_token: int = Field(32, ge=1)
  bond_ws_max_per_ip: int = Field(1024, ge=1)
  bond_api_rate_per_sec: float = Field(10.0, gt=0)
  bond_api_rate_burst: int = Field(40, ge=1)
  bond_compile_timeout_sec: float = Field(2.0, gt=0)
  bond_compile_threads: int = Field(2, ge=1, le=64)
  bond_sim_host: str = "127.0.0.1"
  bond_sim_port: int = 8765
  bond_sim_trades_per_sec: float = Field(20.0, ge=0)
  bond_x_rate: float = Field(2.0, ge=0)
  bond_onchain_rate: float = Field(5.0, ge=0)
  x_bearer: str | None = None
  x_api_url: str = "https://api.x.com"
  onchain_mode: Literal["mock", "grpc"] = "mock"
  grpc_endpoint: str = "chi1.cracknode.com:10000"
  grpc_x_token: str | None = None
  bond_home: str = ".bond"
  # ---- bounded specs and custom feeds (issue 13): every cap a user's spec must fit.
  # The `le` bounds are the ceilings StreamSpec enforces on any spec, stored or new.
  bond_max_symbols: int = Field(20, ge=1, le=200)  # per stream and per source
  bond_max_sources: int = Field(8, ge=1, le=32)
  bond_max_exchanges: int = Field(10, ge=1, le=50)  # per stream and per ccxt source
  bond_max_feeds_per_stream: int = Field(100, ge=1)  # exchanges x pairs + bases + ...
  bond_max_feeds_per_project: int = Field(250, ge=1)  # distinct feeds of a project's streams
  bond_max_sentence_chars: int = Field(1000, ge=1, le=10_000)
  bond_max_subscribe_bytes: int = Field(4096, ge=16, le=65_536)  # a custom subscribe, as JSON
  bond_max_subscribe_depth: int = Field(8, ge=1, le=32)
  bond_custom_allow: str = ""  # hosts and CIDRs custom feeds may reach besides public ones
  bond_custom_max_message_bytes: int = Field(65_536, ge=1024, le=1 << 20)
  bond_custom_max_msgs_per_sec: float = Field(200.0, gt=0)
  bond_custom_ts_skew_ms: int = Field(300_000, ge=1000)  # event time kept within now +- this
  # ---- history (issue 14): how long Kafka keeps windows and raw events, and how it is read.
  bond_history_hours: int = Field(24, ge=1, le=24 * 365)  # retention of bond.stream.<id>
  bond_raw_retention_hours: int = Field(24, ge=1, le=24 * 365)  # retention of bond.raw.*
  bond_history_limit: int = Field(1000, ge=1)  # GET .../windows rows per page by default
  bond_history_max_limit: int = Field(10_000, ge=1, le=100_000)  # and at most
  bond_history_readers: int = Field(32, ge=1, le=1024)  # Kafka history reads at once, per process

  @field_validator("bond_custom_allow")
  @classmethod
  def _allow_list(cls, value: str) -> str:
    from bond.netguard import AllowList

    try:
      AllowList.parse(value)  # refuse a bad entry at start, with a message naming it
    except ConfigError as exc:
      raise ValueError(exc.message) from None
    return value

  # The worker: its Faust application id (consumer group, changelog topic prefix) and
  # whether it runs the feeds (off: it only aggregates what others publish; tests, benches).
  bond_app_id: str = "bond"
  bond_feeds: bool = True

  @field_validator("bond_exchanges")
  @classmethod
  def _known_exchanges(cls, value: str) -> str:
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    if not names:
      raise ValueError("BOND_EXCHANGES needs at least one exchange, e.g. binance,okx,bybit")
    return ",".join(names)

  @property
  def stream_retention_ms(self) -> int:
    """Return how long stream topics keep windows (BOND_HISTORY_HOURS), in ms."""
    return self.bond_history_hours * 3_600_000

  @property
  def raw_retention_ms(self) -> int:
    """Return how long raw topics keep events (BOND_RAW_RETENTION_HOURS), in ms."""
    return self.bond_raw_retention_hours * 3_600_000

  @property
  def exchanges(self) -> list[str]:
    """Return the configured exchange ids, in order."""
    return self.bond_exchanges.split(",")

  @property
  def mcp_allowed_hosts(self) -> tuple[str, ...]:
    """Return the Host headers /mcp answers (empty: no check)."""
    return tuple(h.strip() for h in self.bond_mcp_hosts.split(",") if h.strip())

  @property
  def api_keys(self) -> dict[str, str]:
    """Return API key -> project name from BOND_API_KEYS (`name:key,...`)."""
    keys: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in self.bond_api_keys.split(","))):
      name, sep, key = item.partition(":")
      if not sep or not name or not key:
        raise ConfigError(f"BOND_API_KEYS entry {item!r} is not name:key")
      keys[key] = name
    return keys

  def require_safe_secret(self) -> None:
    """Refuse to run a service outside development on unsafe settings (one line, naming the variable)."""
    if self.bond_env == "dev":
      return
    why = f"BOND_ENV={self.bond_env} (production)"
    if not self.bond_api_keys.strip():
      raise ConfigError(
        f"BOND_API_KEYS is empty under {why}: set it to name:key,... (or BOND_ENV=dev)"
      )
    self.api_keys  # noqa: B018 - a malformed entry raises ConfigError naming it
    for name, value in (
      ("BOND_SECRET", self.bond_secret),
      ("BOND_SECRET_PREVIOUS", self.bond_secret_previous),
    ):
      if value is None or (name == "BOND_SECRET_PREVIOUS" and value == ""):
        continue
      if value == DEFAULT_SECRET:
        raise ConfigError(
          f"{name} is the default development secret under {why}: set a long random value "
          "(e.g. `openssl rand -hex 32`)"
        )
      if len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
          f"{name} is shorter than {MIN_SECRET_BYTES} bytes under {why}: "
          "use e.g. `openssl rand -hex 32`"
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
  """Return the process-wide Settings, built once from the environment."""
  return Settings()
