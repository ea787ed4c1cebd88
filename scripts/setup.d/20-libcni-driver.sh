#!/usr/bin/env bash
# Build the libcni test driver (tests/libcni-driver/cnidriver) from Debian's libcni source
# (golang-github-appc-cni-dev, GOPATH mode with golang-go).  Idempotent: rebuilds only when
# main.go is newer than the binary.  Needs: golang-go golang-github-appc-cni-dev (setup-test-env.sh).
set -euo pipefail
cd "$(dirname "$0")/../../tests/libcni-driver"

GOPATH_DEB=/usr/share/gocode
if [ ! -d "$GOPATH_DEB/src/github.com/containernetworking/cni/libcni" ]; then
  echo "setup: libcni source missing under $GOPATH_DEB (apt-get install golang-github-appc-cni-dev)" >&2
  exit 1
fi
command -v go >/dev/null || { echo "setup: go missing (apt-get install golang-go)" >&2; exit 1; }

if [ -x cnidriver ] && [ cnidriver -nt main.go ]; then
  exit 0
fi
# GOPATH mode: no go.mod, no network; the cache goes to a private dir when HOME is unusable.
export GO111MODULE=off GOPATH="$GOPATH_DEB" GOFLAGS=
if [ -z "${GOCACHE:-}" ] && { [ -z "${HOME:-}" ] || [ ! -w "${HOME:-/nonexistent}" ]; }; then
  export GOCACHE=/var/tmp/cni-ipam-gocache
fi
go build -trimpath -o cnidriver.tmp . && mv -f cnidriver.tmp cnidriver
echo "setup: built tests/libcni-driver/cnidriver"
