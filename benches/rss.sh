#!/usr/bin/env bash
# Peak memory of a whole backup must not grow with the dump (issue 9): runs
# examples/pipeline_rss.rs (backup::run of a generated spend-log dump into a store that discards
# it; parts "upload" in PART_DELAY_MS each, like S3 at ~80 MiB/s per part in flight) at a small
# and a large size for each codec, and fails if the large run's peak RSS exceeds the small one's
# by more than GROWTH_PCT percent and SLACK_MIB (one part: how full the pipeline's buffers get
# varies with the machine's load; a leak would grow with the 5x larger dump by far more), or
# exceeds LIMIT_MIB.
#
#   benches/rss.sh                          # as scripts/test.sh runs it: debug build, 1 run each
#   PROFILE=release RUNS=3 benches/rss.sh   # the shipped build, medians of 3
#
# Environment: SMALL (400M: big enough that the pipeline's buffers fill as in the large run),
# LARGE (2G), CODECS ("gzip zstd none"), RUNS (1), PROFILE (debug, the profile the test suite
# builds; release), LIMIT_MIB (64), GROWTH_PCT (10), SLACK_MIB (8), PART_DELAY_MS (100),
# BIN (a pipeline_rss binary to run instead of building one, e.g. one built from an older commit).
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL="${SMALL:-400M}"
LARGE="${LARGE:-2G}"
CODECS="${CODECS:-gzip zstd none}"
RUNS="${RUNS:-1}"
PROFILE="${PROFILE:-debug}"
LIMIT_MIB="${LIMIT_MIB:-64}"
GROWTH_PCT="${GROWTH_PCT:-10}"
SLACK_MIB="${SLACK_MIB:-8}"
PART_DELAY_MS="${PART_DELAY_MS:-100}"

case "$PROFILE" in
  debug) [[ -n "${BIN:-}" ]] || cargo build --locked --quiet --example pipeline_rss ;;
  release) [[ -n "${BIN:-}" ]] || cargo build --locked --quiet --release --example pipeline_rss ;;
  *) echo "rss: PROFILE must be debug or release" >&2; exit 2 ;;
esac
bin="${BIN:-target/$PROFILE/examples/pipeline_rss}"

# The median peak RSS (KiB) of RUNS runs; each run's line goes to stderr.
peak() {
  local codec=$1 size=$2 out peaks=()
  for _ in $(seq 1 "$RUNS"); do
    out=$("$bin" --size "$size" --compression "$codec" --part-delay-ms "$PART_DELAY_MS")
    echo "rss: $out" >&2
    peaks+=("$(sed -n 's/.* peak_kib=\([0-9]*\).*/\1/p' <<<"$out")")
  done
  printf '%s\n' "${peaks[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

failed=0
printf 'rss: %-5s %12s %12s %8s  (%s build, median of %s, limit %s MiB, growth <= %s%% or %s MiB)\n' \
  codec "$SMALL MiB" "$LARGE MiB" growth "$PROFILE" "$RUNS" "$LIMIT_MIB" "$GROWTH_PCT" "$SLACK_MIB" >&2
for codec in $CODECS; do
  small=$(peak "$codec" "$SMALL")
  large=$(peak "$codec" "$LARGE")
  verdict=$(awk -v s="$small" -v l="$large" -v lim="$LIMIT_MIB" -v g="$GROWTH_PCT" -v slack="$SLACK_MIB" 'BEGIN {
    growth = 100 * (l - s) / s
    ok = (l <= lim * 1024 && (growth <= g || l - s <= slack * 1024))
    printf "%12.1f %12.1f %7.1f%%  %s", s / 1024, l / 1024, growth, ok ? "ok" : "FAIL"
  }')
  echo "rss: $(printf '%-5s' "$codec") $verdict" >&2
  [[ "$verdict" == *FAIL ]] && failed=1
done
if ((failed)); then
  echo "rss: peak memory grows with the dump or exceeds $LIMIT_MIB MiB" >&2
  exit 1
fi
echo "rss: peak memory is flat from $SMALL to $LARGE and within $LIMIT_MIB MiB" >&2
