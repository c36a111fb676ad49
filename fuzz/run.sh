#!/usr/bin/env bash
# Runs one fuzz target at low priority with its seeds, keeping what it finds
# in corpus/<target> (not committed), and prints one campaign-log line:
#   target | executions | seconds | exec/s | corpus files | date
#
#   fuzz/run.sh <target> <seconds> [extra libFuzzer flags...]
#   fuzz/run.sh all <seconds>        # every target in turn
set -euo pipefail
cd "$(dirname "$0")"

seeds_for() {
  case "$1" in
    header | frame_stream | message | message_by_opcode | value_parsers) echo seeds/frames ;;
    system_event_value) echo seeds/system_event_value ;;
    consumer) echo seeds/consumer ;;
    consumer_stream_ids) echo seeds/consumer_stream_ids ;;
    consumer_handshake) echo seeds/consumer_handshake ;;
    producer) echo seeds/producer ;;
    cluster_config) echo ../dcp-proto/tests/cluster_fixtures ;;
    cluster_client) echo seeds/consumer_handshake ;;
    roundtrip) echo "" ;;
    *) echo "unknown target $1" >&2; exit 2 ;;
  esac
}

run_one() {
  local target=$1 seconds=$2
  shift 2
  mkdir -p "corpus/$target"
  local log
  log=$(mktemp)
  # shellcheck disable=SC2046
  if ! nice -n 19 cargo +nightly fuzz run -O -a -s none "$target" "corpus/$target" $(seeds_for "$target") \
      -- -max_total_time="$seconds" -print_final_stats=1 "$@" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "$target: FAILED (artifacts in fuzz/artifacts/$target)" >&2
    rm -f "$log"
    return 1
  fi
  local runs secs
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
  local files
  files=$(find "corpus/$target" -type f | wc -l)
  printf '| %s | %s | %s | %s | %s | %s |\n' "$target" "$runs" "$secs" \
    "$((runs / (secs > 0 ? secs : 1)))" "$files" "$(date -u +%Y-%m-%d)"
  rm -f "$log"
}

if [[ $# -lt 2 ]]; then
  echo "usage: $0 <target|all> <seconds> [libFuzzer flags...]" >&2
  exit 2
fi
if [[ $1 == all ]]; then
  seconds=$2
  shift 2
  for target in $(cargo +nightly fuzz list); do
    run_one "$target" "$seconds" "$@"
  done
else
  run_one "$@"
fi
