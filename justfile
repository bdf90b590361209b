# Names for plain cargo commands; every recipe works without just too.

# Formatting, lints and the default test suite, as CI runs them.
check:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo test --workspace

test:
    cargo test --workspace

# Long crash, corruption and concurrency runs (ignored by default).
torture:
    cargo test --workspace -- --ignored

# Micro benchmarks of the pipeline stages (criterion).
bench:
    cargo bench --bench throughput

# Race against restic, borg and rustic on a generated 1 GiB data set; writes
# target/bench/compare.md and docs/performance.md (SNAP_BENCH_SCALE=0.1 for a quick run).
bench-compare:
    cargo bench --bench compare
