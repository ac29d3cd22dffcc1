"""The sentence compiler's fixed vocabulary: assets, sources, exchanges, units and filler."""

import re
from decimal import Decimal

MAX_TEXT_CHARS = 1000  # the default of BOND_MAX_SENTENCE_CHARS
MIN_INTERVAL_SEC = 1
MAX_INTERVAL_SEC = 3600
DEFAULT_INTERVAL_SEC = 5
EXAMPLES = (
  "BTC price + tweets every 5s",
  "ETH trades + liquidations on binance every 10 seconds",
)
KNOWN_EXCHANGES = (
  "binance",
  "okx",
  "bybit",
  "coinbase",
  "kraken",
  "kucoin",
  "bitget",
  "gate",
  "mexc",
  "htx",
)

# ---------------------------------------------------------------------- vocabulary

# Other ccxt exchanges people name: read as exchanges (and refused where not run), never
# dropped ("BTC price on deribit" is not "BTC price" on the default exchanges).
_OTHER_EXCHANGES = """deribit bitfinex bitstamp gemini upbit bithumb bitmex phemex poloniex bingx
  bitmart coinex lbank whitebit bitflyer cryptocom binanceus binanceusdm binancecoinm
  krakenfutures woo""".split()
# Names that are an exchange after "on"/"from"/"via"/"at", else an asset (HYPE).
_EXCHANGE_OR_ASSET = {"hyperliquid": "hyperliquid"}
_EXCHANGE_WORDS = {name: name for name in KNOWN_EXCHANGES + tuple(_OTHER_EXCHANGES)} | {
  "crypto.com": "cryptocom",
  "okex": "okx",
  "gateio": "gate",
  "gate.io": "gate",
  "huobi": "htx",
  "coinbasepro": "coinbase",
}


def _words(table: dict[str, str]) -> dict[str, str]:
  """Invert {"BTC": "bitcoin btc"} into {"bitcoin": "BTC", "btc": "BTC"}."""
  return {word: key for key, words in table.items() for word in words.split()}


# Names and lowercase tickers; uppercase or $-prefixed unknown tickers are accepted too.
_ASSETS = _words(
  {
    "BTC": "bitcoin btc xbt",
    "ETH": "ethereum ether eth",
    "SOL": "solana sol",
    "DOGE": "dogecoin doge",
    "XRP": "ripple xrp",
    "LINK": "chainlink",
    "ADA": "cardano ada",
    "AVAX": "avalanche avax",
    "DOT": "polkadot",
    "LTC": "litecoin ltc",
    "TRX": "tron trx",
    "MATIC": "polygon matic",
    "SHIB": "shiba shib",
    "PEPE": "pepe",
    "BNB": "bnb",
    "TON": "toncoin",
    "SUI": "sui",
    "APT": "aptos",
    "ARB": "arbitrum arb",
    "OP": "optimism",
    "UNI": "uniswap",
    "ATOM": "cosmos",
    "XLM": "stellar xlm",
    "XMR": "monero xmr",
    "FIL": "filecoin",
    "HBAR": "hedera hbar",
    "INJ": "injective inj",
    "TIA": "celestia tia",
    "JUP": "jupiter jup",
    "BONK": "bonk",
    "WIF": "wif dogwifhat",
    "FLOKI": "floki",
    "AAVE": "aave",
    "KAS": "kaspa",
    "ALGO": "algorand",
    "XTZ": "tezos",
    "BCH": "bch",
    "FTM": "fantom",
    "WLD": "worldcoin",
    "ENA": "ethena",
    "HYPE": "hyperliquid",
  }
)
# Tickers that are also English words: symbols only in context (see _Scanner._ambiguous).
_AMBIGUOUS_ASSETS = {
  w: w.upper() for w in "near link dot ton op uni atom apt ape etc hype pol sei fil".split()
}
_MULTIWORD_ASSETS = {
  ("bitcoin", "cash"): "BCH",
  ("ethereum", "classic"): "ETC",
  ("shiba", "inu"): "SHIB",
  ("binance", "coin"): "BNB",
  ("internet", "computer"): "ICP",
}
_QUOTES = frozenset("usdt usdc usd busd fdusd eur gbp jpy krw aud cad chf brl".split())
_QUOTE_LINKS = frozenset("in against vs versus quoted denominated".split())
# Uppercase words that are not tickers even though they look like one.
_NOT_TICKERS = frozenset(
  "API JSON WS URL UTC ETF NFT NFTS CEX DEX OK PLS PLZ ASAP AI PNL ATH TA GM FYI USA".split()
)

_CCXT_WORDS = frozenset(
  """price prices pricing ticker tickers tick ticks trade trades trading volume volumes vol
  market markets ohlc ohlcv candle candles candlestick candlesticks kline klines bar bars
  quote quotes vwap ccxt ccxt.ticker ccxt.trades exchange exchanges cex px pxs prx""".split()
)
_LIQUIDATION_WORDS = frozenset("liquidation liquidations liq liqs liquidated rekt".split())
_TWITTER_WORDS = frozenset(
  """tweet tweets tweeted twitter x x.tweets x.com post posts mention mentions sentiment
  social chatter buzz""".split()
)
# Word -> the on-chain event type it asks for (None: the default types).
_ONCHAIN_WORDS: dict[str, str | None] = {
  **dict.fromkeys("on-chain onchain onchain.grpc chain blockchain geyser grpc".split()),
  **_words(
    {
      "tx": "transaction transactions tx txs txn txns",
      "transfer": "transfer transfers",
      "block": "block blocks slot slots",
      "account": "account accounts wallet wallets",
    }
  ),
}
_DEFAULT_ONCHAIN_TYPES = ["tx", "transfer"]
# Words that, after "solana"/"sol", make it the chain rather than a traded symbol.
_CHAIN_FOLLOWERS = set(_ONCHAIN_WORDS) | {"activity", "network"}
_SOURCE_WORDS = _CCXT_WORDS | _LIQUIDATION_WORDS | _TWITTER_WORDS | set(_ONCHAIN_WORDS)

_UNITS = {
  **dict.fromkeys("ms msec millisecond milliseconds".split(), Decimal("0.001")),
  **dict.fromkeys("s sec secs second seconds".split(), Decimal(1)),
  **dict.fromkeys("m min mins minute minutes".split(), Decimal(60)),
  **dict.fromkeys("h hr hrs hour hours".split(), Decimal(3600)),
  **dict.fromkeys("d day days".split(), Decimal(86400)),
}
_ONES = """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
  fifteen sixteen seventeen eighteen nineteen""".split()
_TENS = {
  "twenty": 20,
  "thirty": 30,
  "forty": 40,
  "fifty": 50,
  "sixty": 60,
  "seventy": 70,
  "eighty": 80,
  "ninety": 90,
}
_NUMBER_WORDS = {"a": 1, "an": 1} | {word: n for n, word in enumerate(_ONES)} | _TENS
# "half a minute", "a quarter of an hour", "three quarters of a minute".
_FRACTION_WORDS = {
  "half": Decimal("0.5"),
  "halves": Decimal("0.5"),
  "quarter": Decimal("0.25"),
  "quarters": Decimal("0.25"),
  "third": Decimal(1) / 3,
  "thirds": Decimal(1) / 3,
}
# A duration right before these is the window ("5 second windows", "30s candles").
_WINDOW_NOUNS = frozenset("window windows bucket buckets interval intervals".split())
# A duration before these is the candles' size, not how long: "for 5 min candles".
_CANDLE_WORDS = frozenset(
  "candle candles candlestick candlesticks kline klines bar bars ohlc ohlcv".split()
)
# Units that, left without a number ("within seconds", "ninety seconds" misread), mean an
# interval the sentence gives but could not be read: refused, not replaced by the default.
_STRAY_UNITS = frozenset("second seconds sec secs minute minutes mins hour hours hrs".split())
# A duration after these asks for the past (a backfill) or for a lifetime, not a window.
_PAST_WORDS = frozenset("last past previous prior recent".split())
_LIFETIME_WORDS = frozenset("next coming".split())
# Words that schedule a stream or give it an end ("until 5pm", "tomorrow"): refused.
_SCHEDULE_WORDS = frozenset("until till untill tomorrow tonight schedule scheduled".split())
_CLOCK_RE = re.compile(r"^[0-9]{1,2}(?:am|pm)$")
# Words asking for past data whatever follows them.
_HISTORY_WORDS = frozenset("history historical backfill backfilled backfilling replay".split())
# "every few seconds": no number to read; refused rather than guessed.
_VAGUE_COUNTS = frozenset("few several many some".split())
# "twice a minute", "3 times per hour": a count per unit.
_TIMES = {"once": 1, "twice": 2, "thrice": 3}
# Conditions on the data ("above 100k", "when it drops"): Bond streams every window.
_CONDITION_WORDS = "above below exceeds exceed crosses cross crossing drops dips pumps dumps"
_EVERY = frozenset({"every", "each", "per"})
_INTERVAL_WORDS = _EVERY | {"interval", "intervals"}
_ADJECTIVE_UNITS = {"hourly": 3600}
# A duration right before these describes the data ("24h volume"), not the window.
_DESCRIPTIVE_FOLLOWERS = frozenset("volume change high low stats".split())
_CONNECTORS = frozenset({",", "&", "+", ";", "|", "and", "or", "plus"})

# What Bond has, said when a sentence asks for something else.
AVAILABLE = (
  "exchange prices (average, open/high/low/close, VWAP), volume and trade counts (say price, "
  "trades, candles or volume), liquidations, tweets from X, Solana on-chain transactions, "
  "transfers, blocks and accounts, and custom WebSocket URLs"
)
# Content words: they ask for data or behaviour Bond does not have. A sentence naming one
# is refused (never compiled with the word dropped). Word -> what it asks for.
_UNSERVED = _words(
  {
    "an order book": "orderbook orderbooks order-book book books depth l2 level2 dom",
    "bid/ask quotes": "bid bids asks bidask bid/ask spread spreads",
    "funding rates": "funding",
    "open interest": "oi",
    "options data": "options option greeks iv implied strike strikes expiry",
    "mark or index prices": "mark index",
    "basis or premium": "basis premium",
    "market capitalisation": "mcap marketcap cap capitalization capitalisation dominance",
    "liquidity data": "liquidity",
    "volatility": "volatility",
    "technical indicators": """rsi macd ema sma bollinger indicator indicators
      atr stochastic cvd heatmap heatmaps""",
    "alerts or signals": "alert alerts signal signals notify notification notifications",
    "conditions or thresholds": _CONDITION_WORDS + " threshold thresholds",
    "predictions": "prediction predictions forecast forecasts",
    "news": "news headline headlines article articles",
    "other social networks": "reddit telegram discord youtube tiktok farcaster",
    "gas or fees": "gas fee fees mempool",
    "DeFi data": "tvl staking apy apr yield yields",
    "whale tracking": "whale whales",
    "fund flows": """flow flows orderflow inflow inflows outflow outflows netflow
      netflows""",
    "supply data": "supply hashrate",
    "sentiment indexes": "fear greed",
  }
)
# Two-word content phrases (checked before the words).
_UNSERVED_PAIRS = {
  ("order", "book"): "an order book",
  ("order", "books"): "an order book",
  ("open", "interest"): "open interest",
  ("market", "cap"): "market capitalisation",
  ("moving", "average"): "technical indicators",
  ("moving", "averages"): "technical indicators",
  ("long", "short"): "long/short ratios",
}

_FILLER = frozenset(
  """give me us stream streams streaming with and or plus feed feeds data the of for please
  pls plz show i want wanna a an live real-time realtime real time update updates updated
  aggregated aggregate aggregates aggregation window windows windowed tumbling bucket buckets
  interval intervals every each per in on from at to into via using use by over across get
  send need would like my our all both also along together combined merged merge mixed
  crypto coin coins token tokens info information stats statistics latest current recent new
  hey hi can you could make create build start subscribe track tracking monitor monitoring
  watch watching follow about as well including include activity network just only some any
  its their that this what is are be it then than spot perp perps perpetual perpetuals
  futures rate snapshot snapshots summary emit emitted rolling level levels counts count
  events event pair pairs symbol symbols source sources custom once few several vs versus
  against quoted denominated usdt usd usdc busd fdusd eur do let lets thanks thank
  something kindly hello ok okay yo sure go ahead now right away quick quickly asap
  continuously continuous constantly ongoing regularly regular keep keeps push pushed
  websocket socket gbp jpy krw aud cad chf brl""".split()
)

_TOKEN_RE = re.compile(
  r"(?P<url>(?i:wss?)://[^\s,]+)"
  r"|(?P<num>-?[0-9]+(?:\.[0-9]+|/[0-9]+)?)(?:-?(?P<unit>[A-Za-z]+))?"
  r"|(?P<prefix>[$#])?(?P<word>[A-Za-z][A-Za-z0-9]*(?:[-./][A-Za-z0-9]+)*)(?P<poss>['\u2019][sS]\b)?"
  r"|(?P<sep>[+,&;|])"
  r"|(?P<other>[$#]|[^\sA-Za-z0-9+,&;|$#]+)"
)
_TICKER_RE = re.compile(r"^[A-Z0-9]{1,15}$")
