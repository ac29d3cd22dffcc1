"""`python -m bench` (make bench): every benchmark, each writing JSON to bench/results/."""

import subprocess
import sys

BENCHES = [
  "bench.pipeline",
  "bench.gateway",
  "bench.memory",
  "bench.feeds",
  "bench.sink",
  "bench.produce",
  "bench.streams",
]


def main() -> int:
  """Run each benchmark in its own process and return non-zero if one failed to run."""
  extra = sys.argv[1:]
  failed = [name for name in BENCHES if subprocess.call([sys.executable, "-m", name, *extra]) != 0]
  if failed:
    print(f"benchmarks that did not complete: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
