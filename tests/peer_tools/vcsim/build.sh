#!/bin/sh
# Builds vcsim from Debian's govmomi source (golang-github-vmware-govmomi-dev) into $1 (default: var/peers/vcsim).
# Installs the Debian packages when missing. A rebuild is skipped when the binary is newer than its sources.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../../../var/peers/vcsim"}
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ]; then
	echo "build.sh: needs golang-go and golang-github-vmware-govmomi-dev (make peer-deps installs them)" >&2
	exit 1
fi
if [ -x "$out" ] && [ -z "$(find "$here" -newer "$out" -name '*.go')" ]; then
	exit 0
fi
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/bulwark/vcsim"
cp "$here"/*.go "$work/src/bulwark/vcsim/"
cd "$work/src/bulwark/vcsim"
GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOCACHE="${GOCACHE:-$HOME/.cache/bulwark-go}" \
	go build -o "$out.tmp" .
mv "$out.tmp" "$out"
