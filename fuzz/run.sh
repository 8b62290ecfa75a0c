#!/usr/bin/env bash
# Runs one fuzz target for a bounded time:
#   fuzz/run.sh TARGET [SECONDS]       (default 120 s)
# Targets: config_parse weights_parse normalize_path compare_json.
# New corpus entries go to fuzz/target/corpus/TARGET (not kept), seeded from
# fuzz/corpus/TARGET (kept); crashes go to fuzz/artifacts/TARGET. See docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")"

target=${1:?usage: fuzz/run.sh TARGET [SECONDS]   (config_parse weights_parse normalize_path compare_json)}
seconds=${2:-120}
[ -f "fuzz_targets/$target.rs" ] || { echo "no fuzz target $target" >&2; exit 2; }

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# cargo-fuzz passes nightly-only compiler flags (-Z sanitizer=address, ...).
# By default the stable toolchain is told to accept them; FUZZ_TOOLCHAIN=nightly
# uses a nightly toolchain instead.
toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
  toolchain=("+$FUZZ_TOOLCHAIN")
else
  export RUSTC_BOOTSTRAP=1
fi

case "$target" in
  config_parse | weights_parse) dict=dict/config.dict ;;
  compare_json) dict=dict/json.dict ;;
  *) dict= ;;
esac

work="target/corpus/$target"
mkdir -p "$work" "artifacts/$target"
args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1)
[ -n "$dict" ] && args+=(-dict="$dict")

cargo "${toolchain[@]}" fuzz run -O "$target" "$work" "corpus/$target" -- "${args[@]}"
