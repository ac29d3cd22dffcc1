"""Bond's benchmarks (`python -m bench.<name> [--quick]`); results go to bench/results/."""
