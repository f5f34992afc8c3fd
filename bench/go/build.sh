#!/usr/bin/env bash
# Build the grpc-go health benchmark server (main.go next to this script), or,
# given PACKAGE, another command of this directory (watchers: the Watch load).
#
#   bench/go/build.sh OUTPUT_PATH [PACKAGE]
#
# Builds in GOPATH mode against Debian's packaged Go sources
# (golang-go + golang-google-grpc-dev, under /usr/share/gocode); never
# downloads anything (no module proxy, GOPROXY=off).
#
# Exit codes: 0 built; 2 usage error; 3 prerequisites missing (go not
# installed, or grpc-go Debian sources absent) -- callers should skip;
# anything else: the build itself failed.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || -z "$1" ]]; then
    echo "usage: $0 OUTPUT_PATH [PACKAGE]" >&2
    exit 2
fi

# Resolve the output path against the caller's cwd before we cd away.
out=$1
[[ $out == /* ]] || out=$PWD/$out
package=./${2:-.}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gopath=/usr/share/gocode

if ! command -v go >/dev/null 2>&1; then
    echo "skip: go not installed (apt-get install golang-go)" >&2
    exit 3
fi
if [[ ! -f $gopath/src/google.golang.org/grpc/health/server.go ||
      ! -d $gopath/src/google.golang.org/grpc/health/grpc_health_v1 ]]; then
    echo "skip: grpc-go Debian sources not found under $gopath (apt-get install golang-google-grpc-dev)" >&2
    exit 3
fi

# GOPATH mode, offline. GOFLAGS is cleared (e.g. -mod=... is invalid in
# GOPATH mode); GOCACHE defaults to a writable temp dir if not set.
export GO111MODULE=off GOPATH=$gopath GOFLAGS= GOPROXY=off
export GOCACHE=${GOCACHE:-${TMPDIR:-/tmp}/petsage-bench-gocache}

cd "$here"

# Any transitive import missing from the Debian sources => skip, not fail.
missing=$(go list -e -deps -f '{{if .Error}}{{.Error}}{{end}}' "$package" 2>&1 |
          grep -m1 'cannot find package' || true)
if [[ -n $missing ]]; then
    echo "skip: incomplete Go sources under $gopath: ${missing%%in any of:*}" >&2
    exit 3
fi

go build -o "$out" "$package"
