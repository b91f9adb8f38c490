#!/bin/sh
# Runs every Go fuzz target of the module briefly (CI does this on each run).
# Usage: hack/fuzz.sh [FUZZTIME]
set -eu
t=${1:-15s}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)' "$dir"/*_test.go 2>/dev/null | awk '{print $2}'); do
		echo "fuzz: $pkg $f ($t)"
		go test -run='^$' -fuzz="^$f\$" -fuzztime="$t" "$pkg"
	done
done
