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
if [ -x "$out" ] && [ -z "$(find "$here" -newer "$out" \( -name '*.go' -o -name build.sh \))" ]; then
	exit 0
fi
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/bulwark/vcsim"
cp "$here/main.go" "$work/src/bulwark/vcsim/"
# A temporary copy of the simulator package, found first on GOPATH, with changed-block tracking (cbt.go), guest
# program execution (guest.go) and guest file operations (guestfiles.go) added, one call inserted where snapshots
# are created, the container-only upload method taken out and its /guestFile/ handler renamed (guestfiles.go
# hands it what is not its own). The build fails if any of these anchors ever moves.
govmomi=/usr/share/gocode/src/github.com/vmware/govmomi
mkdir -p "$work/src/github.com/vmware/govmomi"
for entry in "$govmomi"/*; do  # the rest of govmomi stays Debian's, linked
	[ "$(basename "$entry")" = simulator ] || ln -s "$entry" "$work/src/github.com/vmware/govmomi/"
done
simulator="$work/src/github.com/vmware/govmomi/simulator"
cp -r "$govmomi/simulator" "$simulator"
cp "$here/cbt.go" "$here/guest.go" "$here/guestfiles.go" "$simulator/"
grep -q '^		snapshot.createSnapshotFiles()$' "$simulator/virtual_machine.go" || {
	echo "build.sh: the snapshot anchor is missing from this govmomi version" >&2
	exit 1
}
manager="$simulator/guest_operations_manager.go"
grep -q '^func (m \*GuestFileManager) InitiateFileTransferToGuest(' "$manager" &&
	grep -q '^func ServeGuest(' "$simulator/container.go" || {
	echo "build.sh: the guest file anchors are missing from this govmomi version" >&2
	exit 1
}
sed -i '/^func (m \*GuestFileManager) InitiateFileTransferToGuest(/,/^}$/d' "$manager"
sed -i 's/^func ServeGuest(/func serveContainerGuest(/' "$simulator/container.go"
sed -i 's/^		snapshot.createSnapshotFiles()$/		snapshot.createSnapshotFiles()\n		cbtSnapshotTaken(vm, snapshot)/' "$simulator/virtual_machine.go"
cd "$work/src/bulwark/vcsim"
GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOCACHE="${GOCACHE:-$HOME/.cache/bulwark-go}" \
	go build -o "$out.tmp" .
mv "$out.tmp" "$out"
