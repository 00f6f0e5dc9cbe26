"""slatimer's benchmark suite (`make bench`, `make bench-quick`): docs/bench.md."""
