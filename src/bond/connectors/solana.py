"""Small Solana helpers shared by the Geyser connector and its local peer."""

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}

SYSTEM_PROGRAM = "11111111111111111111111111111111"
TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022_PROGRAM = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
LAMPORTS_PER_SOL = 1_000_000_000
# SPL Token instruction tags that move tokens: Transfer (3) and TransferChecked (12).
TOKEN_TRANSFER_TAGS = (3, 12)
# System program instruction index of Transfer (u32 little-endian 2).
SYSTEM_TRANSFER_TAG = 2


def b58encode(data: bytes) -> str:
  """Return the base58 (Bitcoin alphabet) text of `data`, as Solana prints keys."""
  number = int.from_bytes(data, "big")
  out = []
  while number:
    number, rem = divmod(number, 58)
    out.append(ALPHABET[rem])
  pad = len(data) - len(data.lstrip(b"\0"))
  return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
  """Return the bytes of a base58 string; raises ValueError on a bad character."""
  number = 0
  for char in text:
    if char not in _INDEX:
      raise ValueError(f"not base58: {char!r}")
    number = number * 58 + _INDEX[char]
  body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
  pad = len(text) - len(text.lstrip("1"))
  return b"\0" * pad + body
