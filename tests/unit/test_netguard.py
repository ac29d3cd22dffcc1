"""Where a custom feed may connect: the URL rule applied when a spec is validated."""

import ipaddress

import pytest

from bond.compiler import CompileError, compile_nl, parse_spec
from bond.config import Settings
from bond.connectors.custom_ws import RateCap
from bond.errors import ConfigError, SpecError
from bond.netguard import AllowList, BlockedAddress, check_url, is_public, literal_ip

# The list, then other spellings of the same places.
HOSTILE = [
  "ws://127.0.0.1:6379/",
  "ws://localhost:9092/",
  "ws://169.254.169.254/latest/meta-data/",
  "ws://[::1]:8080/",
  "ws://0x7f000001:6379/",
  "ws://10.0.0.1/",
  "ws://127.0.0.1:6066",
  "ws://2130706433/",  # decimal
  "ws://0177.0.0.1/",  # octal
  "ws://0x7f.0.0.1/",
  "ws://127.1/",  # short form
  "ws://0/",
  "ws://0.0.0.0:8000/",
  "ws://[::]/",
  "ws://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
  "ws://[::ffff:a9fe:a9fe]/",  # the metadata service, mapped
  "ws://[fe80::1%25eth0]/",
  "ws://[fc00::1]/",
  "ws://[fd12:3456::1]/",
  "ws://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
  "ws://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
  "ws://[::127.0.0.1]/",  # IPv4-compatible
  "ws://192.168.1.1/",
  "ws://172.16.0.1/",
  "ws://100.64.0.1/",  # shared (carrier NAT)
  "ws://224.0.0.1/",  # multicast
  "ws://240.0.0.1/",  # reserved
  "ws://255.255.255.255/",
  "ws://redis.localhost/",
  "WS://LOCALHOST./",
  "wss://user:pw@127.0.0.1/",
]
MALFORMED = [
  "http://example.com/",
  "ftp://example.com/",
  "example.com",
  "ws://",
  "ws:///path",
  "ws://exa mple.com/",
  "ws://evil.com\\@127.0.0.1/",
  "ws://example.com:99999/",
  "ws://example.com/\r\nHost: x",
  "ws://999.0.0.1/",
]
PUBLIC = [
  "wss://feed.example.com/ws",
  "wss://stream.binance.com:9443/ws/btcusdt@trade",
  "ws://8.8.8.8/",
  "ws://[2001:4860:4860::8888]:443/",
  "ws://127.0.0.1.nip.io/",  # a name: its addresses are checked when connecting
]


def _custom(url: str) -> dict[str, object]:
  return {"sources": [{"type": "custom", "url": url}]}


@pytest.mark.parametrize("url", HOSTILE)
def test_inside_addresses_are_refused_in_a_spec(url: str) -> None:
  with pytest.raises(SpecError) as info:
    parse_spec(_custom(url))
  message = str(info.value)
  assert "sources.0.url" in message and "BOND_CUSTOM_ALLOW" in message


@pytest.mark.parametrize("url", HOSTILE)
def test_inside_addresses_are_refused_in_a_sentence(url: str) -> None:
  with pytest.raises(CompileError) as info:
    compile_nl(f"BTC price + {url} every 5s")
  assert "BOND_CUSTOM_ALLOW" in str(info.value)


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_are_refused(url: str) -> None:
  with pytest.raises(SpecError, match=r"sources\.0\.url"):
    parse_spec(_custom(url))


@pytest.mark.parametrize("url", PUBLIC)
def test_public_urls_are_accepted(url: str) -> None:
  assert parse_spec(_custom(url)).sources[0].url == url  # type: ignore[union-attr]


def test_the_allow_list_admits_listed_networks_and_hosts_only() -> None:
  settings = Settings(bond_custom_allow="127.0.0.1/32, feeds.internal ,10.1.0.0/16")
  assert parse_spec(_custom("ws://127.0.0.1:6066/"), settings)
  assert parse_spec(_custom("ws://10.1.2.3/"), settings)
  assert parse_spec(_custom("ws://[::ffff:127.0.0.1]/"), settings)  # the mapped form too
  assert parse_spec(_custom("ws://localhost:6066/"), settings)  # localhost is 127.0.0.1
  assert compile_nl("BTC price + ws://127.0.0.1:6066 every 5s", settings=settings)
  for url in ("ws://10.2.0.1/", "ws://[::1]/", "ws://169.254.169.254/", "ws://127.0.0.2/"):
    with pytest.raises(SpecError, match="BOND_CUSTOM_ALLOW"):
      parse_spec(_custom(url), settings)
  allow = AllowList.parse(settings.bond_custom_allow)
  assert allow.admits_host("FEEDS.INTERNAL.") and not allow.admits_host("other.internal")


def test_a_stored_spec_with_an_allowed_private_url_still_loads() -> None:
  # Read back without a validation context (the registry), only the syntax is checked:
  # the connector checks the address on every connect anyway.
  from bond.schemas import StreamSpec

  assert StreamSpec.model_validate(_custom("ws://127.0.0.1:6066/"))
  with pytest.raises(ValueError):
    StreamSpec.model_validate(_custom("http://127.0.0.1/"))


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "a/b", "bad host", "0x7f000001", "*"])
def test_a_bad_allow_list_entry_is_named(entry: str) -> None:
  with pytest.raises(ConfigError, match="BOND_CUSTOM_ALLOW"):
    AllowList.parse(entry)
  with pytest.raises(ValueError, match="BOND_CUSTOM_ALLOW"):
    Settings(bond_custom_allow=entry)


@pytest.mark.parametrize(
  ("host", "address"),
  [
    ("0x7f000001", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0177.0.0.01", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("10.1", "10.0.0.1"),
    ("[::1]", "::1"),
    ("::ffff:7f00:1", "::ffff:7f00:1"),
    ("example.com", None),
    ("1.2.3.4.example", None),
  ],
)
def test_literal_addresses_in_every_form(host: str, address: str | None) -> None:
  found = literal_ip(host)
  assert (str(found) if found is not None else None) == address


def test_a_malformed_number_is_not_taken_for_a_name() -> None:
  with pytest.raises(BlockedAddress):
    literal_ip("999.1.1.1")


@pytest.mark.parametrize(
  ("address", "public"),
  [
    ("8.8.8.8", True),
    ("2001:4860:4860::8888", True),
    ("127.0.0.1", False),
    ("169.254.169.254", False),
    ("::ffff:8.8.8.8", False),  # a mapped address is not a way out, even of a public one
    ("2002:0808:0808::1", True),  # 6to4 of a public address
    ("2002:0a00:0001::1", False),  # 6to4 of 10.0.0.1
    ("ff02::1", False),
    ("::", False),
  ],
)
def test_what_counts_as_public(address: str, public: bool) -> None:
  assert is_public(ipaddress.ip_address(address)) is public


def test_the_static_check_does_no_dns() -> None:
  # A name that cannot resolve passes the static check; the connector resolves it later.
  assert check_url("wss://no-such-host.invalid/ws", AllowList()).host == "no-such-host.invalid"


def test_the_rate_cap_allows_one_burst_then_refuses() -> None:
  cap = RateCap(rate_per_sec=5.0)
  taken = [cap.take() for _ in range(20)]
  assert taken[:5] == [True] * 5 and taken.count(True) <= 6
