#!/usr/bin/env bash
# Tests of check-metric-names.py: it accepts the shipped rules and dashboard against the sample
# scrape, and refuses a rule or a dashboard panel naming a metric the scrape does not have.
set -euo pipefail
cd "$(dirname "$0")"
check=./check-metric-names.py
sample=testdata/sample-metrics.prom
passed=0 failed=0

expect() { # expect EXIT-CODE TEXT-IN-OUTPUT -- ARGS...
  local want=$1 text=$2; shift 3
  local out rc=0
  out=$("$check" "$@" 2>&1) || rc=$?
  if [[ $rc -eq $want && $out == *"$text"* ]]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: check-metric-names.py $* exited $rc (want $want, output containing '$text'):" >&2
    echo "$out" >&2
  fi
}

expect 0 "all in $sample" -- "$sample" residency-proxy-alerts.yml residency-proxy-dashboard.json
expect 1 "residency_proxy_denied_requests_total: not in" -- "$sample" testdata/bogus-rules.yml
expect 1 "residency_proxy_request_duration_seconds: not in" -- "$sample" testdata/bogus-dashboard.json
expect 1 "residency_proxy_open_tunnels_bucket: not in" -- "$sample" testdata/bogus-dashboard.json
# One bogus file among good ones still fails, naming only the bogus file.
expect 1 "(used in testdata/bogus-rules.yml)" -- "$sample" residency-proxy-alerts.yml testdata/bogus-rules.yml
# A scrape without the families the rules use (an empty one) fails every name.
empty=$(mktemp)
trap 'rm -f "$empty"' EXIT
expect 1 "6 of 6 metric names missing" -- "$empty" residency-proxy-alerts.yml
# A file naming no metric at all is an error, not a pass.
expect 2 "No such file" -- "$sample" testdata/no-such-rules.yml
echo 'groups: [{name: x, rules: [{alert: A, expr: up == 0}]}]' > "$empty.yml"
expect 2 "names no residency_proxy_* metric" -- "$sample" "$empty.yml"
rm -f "$empty.yml"

echo "check-metric-names.py tests: ${passed} cases as expected, ${failed} not"
[[ $failed -eq 0 ]]
