"""Where a custom feed may connect: ws/wss to public addresses, plus what the operator allows.

Two checks, one rule:
- when a spec is validated, `check_url` looks at the URL alone (no DNS): the scheme, the
  host's spelling, and any literal address in any form (`127.0.0.1`, `[::1]`, `0x7f000001`,
  `2130706433`, `0177.0.0.1`, `127.1`, `::ffff:127.0.0.1`) and `localhost`;
- on every connect and reconnect, `resolve_checked` resolves the host and checks every
  address it gets. The connector then connects to the address it checked (with the URL's
  Host and TLS server name), so a DNS answer that changes in between cannot move it inside.

An address is public when it is globally routable: not loopback, private (RFC 1918,
unique-local fc00::/7), shared (100.64/10), link-local (169.254/16 with the cloud metadata
service, fe80::/10), multicast, unspecified, reserved or documentation, and not an IPv6 form
that embeds such an IPv4 address (mapped, compatible, 6to4, Teredo, NAT64).

`BOND_CUSTOM_ALLOW` (comma-separated host names and CIDRs, e.g.
`feeds.internal,10.1.0.0/16,127.0.0.1/32`) admits private feeds: a listed host name with
all its addresses, a listed network for any host resolving into it.
"""

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass, field

from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from bond.errors import BondError, ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_CHARS = 2048
MAX_ADDRESSES_TRIED = 4
ALLOW_SETTING = "BOND_CUSTOM_ALLOW"
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# inet_aton's forms: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x).
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.I)
_HOST_NAME = re.compile(
  r"^(?=.{1,253}\.?$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
  r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$",
  re.I,
)


class BlockedAddress(BondError):
  """A custom feed's URL or resolved address is not one Bond may connect to."""

  code = "blocked_address"


@dataclass(frozen=True)
class AllowList:
  """The operator's exceptions to "public addresses only" (BOND_CUSTOM_ALLOW)."""

  hosts: frozenset[str] = frozenset()
  networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

  @classmethod
  def parse(cls, text: str | None) -> "AllowList":
    """Return the allow-list of `host,host,cidr,...`; raise ConfigError on a bad entry."""
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in (text or "").split(","):
      entry = raw.strip().lower()
      if not entry:
        continue
      try:
        networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        continue
      except ValueError:
        pass
      if "/" in entry or not _HOST_NAME.match(entry) or _NUMERIC_HOST.match(entry):
        raise ConfigError(
          f"{ALLOW_SETTING} entry {raw.strip()!r} is neither a host name nor a CIDR "
          "(e.g. feeds.internal,10.0.0.0/8,127.0.0.1/32)"
        )
      hosts.add(entry.rstrip("."))
    return cls(frozenset(hosts), tuple(networks))

  def admits_host(self, host: str) -> bool:
    """Return whether the operator listed this host name."""
    return host.lower().rstrip(".") in self.hosts

  def admits_ip(self, ip: IPAddress) -> bool:
    """Return whether the operator listed a network holding this address."""
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
      candidates.append(ip.ipv4_mapped)
    return any(c in net for c in candidates for net in self.networks if c.version == net.version)


def literal_ip(host: str) -> IPAddress | None:
  """Return the address a host spells literally (in any form a resolver accepts), or None."""
  text = host.strip().strip("[]").lower()
  try:
    return ipaddress.ip_address(text)
  except ValueError:
    pass
  if "%" in text:  # an IPv6 zone: "fe80::1%eth0"
    try:
      return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
      pass
  if _NUMERIC_HOST.match(text):
    try:
      return ipaddress.IPv4Address(socket.inet_aton(text.rstrip(".")))
    except OSError:
      raise BlockedAddress(f"host {host[:60]!r} is a malformed numeric address") from None
  return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
  if ip.ipv4_mapped is not None:
    return ip.ipv4_mapped
  if ip.sixtofour is not None:
    return ip.sixtofour
  if ip.teredo is not None:
    return ip.teredo[1]
  if ip in _NAT64 or int(ip) >> 32 == 0:  # NAT64, or the deprecated ::a.b.c.d
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
  return None


def is_public(ip: IPAddress) -> bool:
  """Return whether an address is globally routable (and embeds no inside address)."""
  if isinstance(ip, ipaddress.IPv6Address):
    inner = _embedded_ipv4(ip)
    if inner is not None and not is_public(inner):
      return False
  return bool(
    ip.is_global
    and not (
      ip.is_private
      or ip.is_loopback
      or ip.is_link_local
      or ip.is_multicast
      or ip.is_reserved
      or ip.is_unspecified
    )
  )


def _kind(ip: IPAddress) -> str:
  if isinstance(ip, ipaddress.IPv6Address) and (ip.is_loopback or ip.is_unspecified):
    return "the IPv6 loopback address" if ip.is_loopback else "the unspecified address"
  if isinstance(ip, ipaddress.IPv6Address):
    inner = _embedded_ipv4(ip)
    if inner is not None and not is_public(inner):
      return f"an IPv6 form of {inner}, {_kind(inner)}"
  if ip.is_loopback:
    return "a loopback address"
  if ip.is_link_local:
    return "a link-local address (e.g. the cloud metadata service)"
  if ip.is_multicast:
    return "a multicast address"
  if ip.is_unspecified:
    return "the unspecified address"
  if ip.is_reserved:
    return "a reserved address"
  if ip.is_private:
    return "a private address"
  return "not a public address"


def _refusal(host: str, ip: IPAddress) -> str:
  shown = host if str(ip) == host.strip("[]") else f"{host} ({ip})"
  return (
    f"{shown} is {_kind(ip)}; custom feeds connect only to public addresses "
    f"unless the operator allows it in {ALLOW_SETTING}"
  )


def admits(host: str, ip: IPAddress, allow: AllowList) -> bool:
  """Return whether a feed for `host` may connect to `ip`."""
  return is_public(ip) or allow.admits_host(host) or allow.admits_ip(ip)


@dataclass(frozen=True)
class FeedUrl:
  """A checked ws:// or wss:// URL: where to connect and what to call the host."""

  url: str
  host: str
  port: int
  secure: bool


def check_url(url: str, allow: AllowList) -> FeedUrl:
  """Return the parsed URL, or raise BlockedAddress if it can never be a custom feed (no DNS)."""
  if len(url) > MAX_URL_CHARS:
    raise BlockedAddress(f"the URL is {len(url)} characters long; the limit is {MAX_URL_CHARS}")
  if not re.match(r"^wss?://", url, re.I):
    raise BlockedAddress("url must be a ws:// or wss:// URL")
  if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
    raise BlockedAddress("url must not contain spaces, control characters or backslashes")
  try:
    parsed = parse_uri(url)
  except (InvalidURI, ValueError) as exc:
    raise BlockedAddress(f"url is not a valid ws:// or wss:// URL ({exc})") from None
  host = parsed.host
  ip = literal_ip(host)
  if ip is None:
    if not _HOST_NAME.match(host):
      raise BlockedAddress(f"url host {host[:60]!r} is not a valid host name")
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
      loopback = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
      if not (allow.admits_host(name) or any(allow.admits_ip(a) for a in loopback)):
        raise BlockedAddress(_refusal(host, loopback[0]))
  elif not admits(host, ip, allow):
    raise BlockedAddress(_refusal(host, ip))
  return FeedUrl(url, host, parsed.port, parsed.secure)


async def resolve_checked(host: str, port: int, allow: AllowList) -> list[tuple[int, str]]:
  """Resolve `host` and return its (family, address) pairs, all checked; raise BlockedAddress.

  Every address must pass: one inside address among public ones refuses the host, since
  the resolver's order is not ours to trust.
  """
  loop = asyncio.get_running_loop()
  infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
  found: list[tuple[int, str]] = []
  for family, _type, _proto, _name, sockaddr in infos:
    address = str(sockaddr[0])
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not admits(host, ip, allow):
      raise BlockedAddress(_refusal(host, ip))
    if (family, address) not in found:
      found.append((family, address))
  if not found:
    raise BlockedAddress(f"{host} resolves to no address")
  return found


async def open_checked(
  host: str, port: int, allow: AllowList, timeout_sec: float = 10.0
) -> socket.socket:
  """Return a TCP socket connected to a checked address of `host` (tried in resolver order)."""
  loop = asyncio.get_running_loop()
  last: OSError | None = None
  # Every address is checked; the first few are tried (each within `timeout_sec`).
  for family, address in (await resolve_checked(host, port, allow))[:MAX_ADDRESSES_TRIED]:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
      async with asyncio.timeout(timeout_sec):
        await loop.sock_connect(sock, (address, port))
    except OSError as exc:  # refused, unreachable, or TimeoutError
      sock.close()
      last = exc
      continue
    except BaseException:
      sock.close()
      raise
    return sock
  raise last or OSError(f"cannot connect to {host}:{port}")
