#!/bin/sh
# Runs every Go fuzz target of the module briefly (CI does this on each run).
# Usage: hack/fuzz.sh [FUZZTIME]
#
# Go's fuzzing engine sometimes ends a run that found nothing with "context
# deadline exceeded" when a worker is slow to stop at the deadline (a loaded
# machine); such a run is tried once more. A run that found a failing input
# (it says so, and writes it under testdata/fuzz) fails at once.
set -eu
t=${1:-15s}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)' "$dir"/*_test.go 2>/dev/null | awk '{print $2}'); do
		for try in 1 2; do
			echo "fuzz: $pkg $f ($t)"
			if go test -run='^$' -fuzz="^$f\$" -fuzztime="$t" "$pkg" >"$out" 2>&1; then
				cat "$out"
				break
			fi
			cat "$out"
			if [ "$try" = 2 ] || ! grep -q 'context deadline exceeded' "$out" || grep -q 'Failing input written' "$out"; then
				exit 1
			fi
			echo "fuzz: $f ended at the deadline without a finding; once more"
		done
	done
done
