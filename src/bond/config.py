"""One Settings object holding every environment variable of DESIGN.md."""

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bond.errors import ConfigError

DEFAULT_SECRET = "dev-secret-change-me"


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
  bond_market: Literal["live", "sim"] = "live"
  bond_exchanges: str = "binance,okx,bybit"
  bond_ccxt_mode: Literal["rest", "ws"] = "ws"
  bond_poll_sec: float = Field(5.0, gt=0)
  bond_api_keys: str = ""
  bond_ws_queue: int = Field(256, ge=1)
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

  @field_validator("bond_exchanges")
  @classmethod
  def _known_exchanges(cls, value: str) -> str:
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    if not names:
      raise ValueError("BOND_EXCHANGES needs at least one exchange, e.g. binance,okx,bybit")
    return ",".join(names)

  @property
  def exchanges(self) -> list[str]:
    """Return the configured exchange ids, in order."""
    return self.bond_exchanges.split(",")

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
    """Refuse to run a service on the default secret outside development."""
    if self.bond_env != "dev" and self.bond_secret == DEFAULT_SECRET:
      raise ConfigError(
        "BOND_SECRET is the default development secret; set BOND_SECRET to a long random "
        "value (e.g. `openssl rand -hex 32`) or BOND_ENV=dev for local use"
      )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
  """Return the process-wide Settings, built once from the environment."""
  return Settings()
