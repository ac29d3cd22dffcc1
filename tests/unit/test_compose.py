"""docker/compose.yaml parses and agrees with the settings module and production mode (no Docker
engine runs here to try it)."""

import re
from pathlib import Path

import pytest
import yaml

from bond.config import Settings
from bond.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BOND_SERVICES = ("worker", "api", "gateway", "sim")


def _compose() -> dict:
  return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def _env_example() -> dict[str, str]:
  pairs = {}
  for line in (ROOT / "docker" / ".env.example").read_text().splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
      name, _, value = line.partition("=")
      pairs[name.strip()] = value.strip()
  return pairs


def _interpolate(value: str, env: dict[str, str]) -> str:
  """Expand ${NAME}, ${NAME:-default} and ${NAME:?error} as compose does."""

  def one(m: re.Match[str]) -> str:
    name, op, arg = m[1], m[2], m[3]
    if env.get(name):
      return env[name]
    if op == ":-":
      return arg
    raise KeyError(f"{name}: {arg}")

  return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_compose_has_every_part_of_the_platform():
  services = _compose()["services"]
  assert {"kafka", "redis", "worker", "api", "gateway", "sim"} <= set(services)
  assert "bond.agents.app" in services["worker"]["command"]
  assert "bond.gateway.app:api" in services["api"]["command"]
  assert "bond.gateway.app:gateway" in services["gateway"]["command"]


def test_compose_publishes_only_on_loopback_with_the_local_ports():
  services = _compose()["services"]
  defaults = Settings.model_construct(**{k: f.default for k, f in Settings.model_fields.items()})
  for name, svc in services.items():
    for port in svc.get("ports", []):
      assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
  published = {
    name: [p.split(":")[-1] for p in svc.get("ports", [])] for name, svc in services.items()
  }
  assert published["api"] == [str(defaults.api_port)]
  assert published["gateway"] == [str(defaults.ws_port)]
  assert published["redis"] == [defaults.redis_url.rsplit(":", 1)[-1]]
  assert published["kafka"] == [defaults.kafka_bootstrap.rsplit(":", 1)[-1]]
  assert published["sim"] == [str(defaults.bond_sim_port)]
  assert str(defaults.api_port) in services["api"]["command"]
  assert str(defaults.ws_port) in services["gateway"]["command"]


def test_the_gateway_caps_client_frames_in_uvicorn():
  command = _compose()["services"]["gateway"]["command"]
  cap = command[command.index("--ws-max-size") + 1]
  assert int(cap) == Settings.model_fields["bond_ws_max_frame_bytes"].default


def test_compose_is_production_by_default_with_secrets_from_an_env_file():
  services = _compose()["services"]
  redis_cmd = services["redis"]["command"]
  assert redis_cmd[redis_cmd.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
  for name in BOND_SERVICES:
    svc = services[name]
    assert svc["env_file"] == [".env"]
    env = svc["environment"]
    assert env["BOND_ENV"] == "${BOND_ENV:-prod}"
    assert "BOND_SECRET" not in env and "BOND_API_KEYS" not in env  # only from the env file
    assert env["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")


def test_compose_environment_names_only_real_settings():
  services = _compose()["services"]
  fields = {name.upper() for name in Settings.model_fields}
  example = _env_example()
  assert set(example) - {"REDIS_PASSWORD"} <= fields
  for name in BOND_SERVICES:
    env = services[name]["environment"]
    assert set(env) <= fields, f"{name}: unknown variables {set(env) - fields}"
    assert env["KAFKA_BOOTSTRAP"].startswith("kafka:")


def test_the_example_env_file_is_refused_until_filled_in():
  example = _env_example()
  env = _compose()["services"]["api"]["environment"]
  with pytest.raises(KeyError, match="REDIS_PASSWORD"):
    _interpolate(env["REDIS_URL"], example)
  filled = {
    **example,
    "REDIS_PASSWORD": "r" * 48,
    "BOND_SECRET": "s" * 64,
    "BOND_API_KEYS": "alpha:" + "k" * 48,
  }
  values = {k: _interpolate(str(v), filled) for k, v in env.items()}
  assert values["BOND_ENV"] == "prod" and values["REDIS_URL"] == f"redis://:{'r' * 48}@redis:6379"
  settings_env = {k.lower(): v for k, v in {**example, **values}.items() if k != "REDIS_PASSWORD"}
  with pytest.raises(ConfigError, match="BOND_API_KEYS is empty"):
    Settings(**settings_env).require_safe_secret()  # as shipped: no keys, empty secret
  with pytest.raises(ConfigError, match="BOND_SECRET is shorter than 32 bytes"):
    Settings(**{**settings_env, "bond_api_keys": "a:b"}).require_safe_secret()
  filled_env = {k.lower(): v for k, v in {**filled, **values}.items() if k != "REDIS_PASSWORD"}
  Settings(**filled_env).require_safe_secret()
