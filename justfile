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

# Time to first byte of the UI's snapshots page (1,000 snapshots) and of a
# 10,000-entry directory (printed; docs/performance.md "UI and browsing").
bench-ui:
    cargo test --test tests e2e::ui::ui_time_to_first_byte -- --ignored --nocapture

# Race against restic, borg and rustic on a generated 1 GiB data set and on
# the three shapes of real data (one 2 GiB file, the cargo registry's sources,
# 100k small files; SNAP_BENCH_SHAPE picks); writes target/bench/compare.md
# and docs/performance.md (SNAP_BENCH_SCALE=0.1 for a quick run).
bench-compare:
    cargo bench --bench compare

# Only the shapes of real data (issue 11), restores into a fresh loop-mounted
# ext4 each (root); SNAP_BENCH_FILES=1000000 for the 1M-file run.
bench-shapes:
    SNAP_BENCH_SHAPE=bigfile,tree,files cargo bench --bench compare

# Every fuzz target for a bounded time each (cargo install cargo-fuzz; the
# sanitizer flags need RUSTC_BOOTSTRAP on a stable toolchain).
fuzz-ci seconds="60":
    for t in pack_header index_file tree snapshot key_file config lock sealed; do \
        RUSTC_BOOTSTRAP=1 cargo fuzz run -O $t -- -max_total_time={{seconds}} -rss_limit_mb=2048 || exit 1; \
    done

# Many hosts, one repository on a 3-node Garage cluster, with forget --prune
# and a node killed mid-run (needs `cargo install garage --version 2.5.0 --locked`).
remote-torture:
    cargo build --release
    tests/remote-torture/run.sh
