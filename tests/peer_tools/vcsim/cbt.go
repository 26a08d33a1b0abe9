// Changed-block tracking for vcsim, which has none: compiled by build.sh into a temporary copy of Debian's
// govmomi simulator package (never into this repository's copy of anything).
//
// With changeTrackingEnabled, every snapshot gives each disk a change id and records a SHA-256 per 64 KiB block
// of the disk's flat file at that moment. QueryChangedDiskAreas(snapshot, disk, offset, changeId) answers with
// the blocks whose content differs between the epoch of changeId and the snapshot's epoch ("*": every block that
// is not all zeros), merged into extents and paged: at most cbtPageExtents extents per answer, the answer's
// Length telling the caller where to continue. An unknown change id, or one issued for another disk, is refused
// with a fault, as vSphere does after a CBT reset.
package simulator

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	cbtBlock       = 64 * 1024
	cbtPageExtents = 64
)

type cbtEpoch struct {
	disk   string // "<vm>/<device key>/<capacity>": a change id is only valid for the disk it was issued for
	hashes [][32]byte
}

var (
	cbtMu     sync.Mutex
	cbtEpochs = map[string]*cbtEpoch{}
	cbtSeq    = 0
	zeroHash  = sha256.Sum256(make([]byte, cbtBlock))
)

func cbtFlatFile(fileName string) (string, error) {
	p, fault := parseDatastorePath(fileName)
	if fault != nil {
		return "", fmt.Errorf("bad datastore path %q", fileName)
	}
	for _, entity := range Map.All("Datastore") {
		ds, ok := entity.(*Datastore)
		if !ok || ds.Name != p.Datastore {
			continue
		}
		local := path.Join(ds.Info.GetDatastoreInfo().Url, p.Path)
		flat := strings.TrimSuffix(local, ".vmdk") + "-flat.vmdk"
		if _, err := os.Stat(flat); err == nil {
			return flat, nil
		}
		return local, nil
	}
	return "", fmt.Errorf("datastore %q not found", p.Datastore)
}

func cbtHashes(file string, capacity int64) ([][32]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	blocks := (capacity + cbtBlock - 1) / cbtBlock
	hashes := make([][32]byte, blocks)
	buffer := make([]byte, cbtBlock)
	for i := int64(0); i < blocks; i++ {
		for j := range buffer {
			buffer[j] = 0
		}
		n, err := f.ReadAt(buffer, i*cbtBlock)
		if err != nil && err != io.EOF {
			return nil, err
		}
		_ = n
		hashes[i] = sha256.Sum256(buffer)
	}
	return hashes, nil
}

// cbtSnapshotTaken gives the snapshot's disks their own copies with a change id (called by CreateSnapshotTask).
func cbtSnapshotTaken(vm *VirtualMachine, snapshot *VirtualMachineSnapshot) {
	if vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
		return
	}
	devices := make([]types.BaseVirtualDevice, 0, len(snapshot.Config.Hardware.Device))
	for _, device := range snapshot.Config.Hardware.Device {
		disk, ok := device.(*types.VirtualDisk)
		if !ok {
			devices = append(devices, device)
			continue
		}
		backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			devices = append(devices, device)
			continue
		}
		file, err := cbtFlatFile(backing.FileName)
		if err != nil {
			devices = append(devices, device)
			continue
		}
		capacity := disk.CapacityInBytes
		if capacity == 0 {
			capacity = disk.CapacityInKB * 1024
		}
		hashes, err := cbtHashes(file, capacity)
		if err != nil {
			devices = append(devices, device)
			continue
		}
		cbtMu.Lock()
		cbtSeq++
		id := fmt.Sprintf("52 %02x 7c 11 9a 0e 4d 3b-%s/%d", cbtSeq%256, strings.ReplaceAll(vm.Self.Value, "-", ""), cbtSeq)
		cbtEpochs[id] = &cbtEpoch{disk: fmt.Sprintf("%s/%d/%d", vm.Self.Value, disk.Key, capacity), hashes: hashes}
		cbtMu.Unlock()
		diskCopy := *disk
		backingCopy := *backing
		backingCopy.ChangeId = id
		diskCopy.Backing = &backingCopy
		devices = append(devices, &diskCopy)
	}
	hardware := snapshot.Config.Hardware
	hardware.Device = devices
	snapshot.Config.Hardware = hardware
}

func (vm *VirtualMachine) QueryChangedDiskAreas(req *types.QueryChangedDiskAreas) soap.HasFault {
	body := new(methods.QueryChangedDiskAreasBody)
	fail := func(message string, fault types.BaseMethodFault) soap.HasFault {
		body.Fault_ = Fault(message, fault)
		return body
	}
	if req.Snapshot == nil {
		return fail("a snapshot is required", &types.InvalidArgument{InvalidProperty: "snapshot"})
	}
	object := Map.Get(*req.Snapshot)
	snapshot, ok := object.(*VirtualMachineSnapshot)
	if !ok {
		return fail("snapshot not found", &types.ManagedObjectNotFound{Obj: *req.Snapshot})
	}
	var disk *types.VirtualDisk
	for _, device := range snapshot.Config.Hardware.Device {
		if d, ok := device.(*types.VirtualDisk); ok && d.Key == req.DeviceKey {
			disk = d
		}
	}
	if disk == nil {
		return fail(fmt.Sprintf("no disk with key %d", req.DeviceKey), &types.InvalidArgument{InvalidProperty: "deviceKey"})
	}
	backing, _ := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if backing == nil || backing.ChangeId == "" {
		return fail("change tracking is not enabled for this disk", &types.FileFault{File: ""})
	}
	cbtMu.Lock()
	current := cbtEpochs[backing.ChangeId]
	previous := cbtEpochs[req.ChangeId]
	cbtMu.Unlock()
	if current == nil {
		return fail("the snapshot's change id is unknown", &types.FileFault{File: backing.FileName})
	}
	if req.ChangeId != "*" && (previous == nil || previous.disk != current.disk) {
		return fail(fmt.Sprintf("change id %q is not valid for this disk", req.ChangeId), &types.InvalidArgument{InvalidProperty: "changeId"})
	}
	capacity := int64(len(current.hashes)) * cbtBlock
	if disk.CapacityInBytes > 0 {
		capacity = disk.CapacityInBytes
	}
	if req.StartOffset < 0 || req.StartOffset > capacity {
		return fail("startOffset beyond the disk", &types.InvalidArgument{InvalidProperty: "startOffset"})
	}
	changed := func(i int) bool {
		if req.ChangeId == "*" {
			return current.hashes[i] != zeroHash
		}
		if i >= len(previous.hashes) {
			return true
		}
		return !bytes.Equal(current.hashes[i][:], previous.hashes[i][:])
	}
	info := types.DiskChangeInfo{StartOffset: req.StartOffset}
	end := capacity
	for i := int(req.StartOffset / cbtBlock); i < len(current.hashes); i++ {
		if !changed(i) {
			continue
		}
		start := int64(i) * cbtBlock
		length := int64(cbtBlock)
		if start+length > capacity {
			length = capacity - start
		}
		areas := info.ChangedArea
		if n := len(areas); n > 0 && areas[n-1].Start+areas[n-1].Length == start {
			areas[n-1].Length += length
			continue
		}
		if len(areas) == cbtPageExtents {
			end = start // the caller continues here
			break
		}
		info.ChangedArea = append(areas, types.DiskChangeExtent{Start: start, Length: length})
	}
	info.Length = end - req.StartOffset
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: info}
	return body
}

var _ = mo.Reference(nil)
