"""docker/compose.yaml agrees with the settings module (no Docker engine runs here to try it)."""

from pathlib import Path

import yaml

from bond.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
  return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def test_compose_has_every_part_of_the_platform():
  services = _compose()["services"]
  assert {"kafka", "redis", "worker", "api", "gateway", "sim"} <= set(services)
  assert "bond.agents.app" in services["worker"]["command"]
  assert "bond.gateway.app:api" in services["api"]["command"]
  assert "bond.gateway.app:gateway" in services["gateway"]["command"]


def test_compose_ports_match_the_local_defaults():
  services = _compose()["services"]
  defaults = Settings.model_construct(**{k: f.default for k, f in Settings.model_fields.items()})
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


def test_compose_environment_names_only_real_settings():
  services = _compose()["services"]
  fields = {name.upper() for name in Settings.model_fields}
  for name in ("worker", "api", "gateway", "sim"):
    env = services[name]["environment"]
    assert set(env) <= fields, f"{name}: unknown variables {set(env) - fields}"
    assert env["KAFKA_BOOTSTRAP"].startswith("kafka:") and env["REDIS_URL"].startswith(
      "redis://redis:"
    )
    Settings(**{k.lower(): v for k, v in env.items() if "${" not in str(v)})  # values validate
