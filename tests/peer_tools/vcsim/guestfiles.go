// Guest file operations for vcsim, whose GuestFileManager in Debian's version works only for VMs backed by a
// container: compiled by build.sh into a temporary copy of the simulator package (which drops the container-only
// InitiateFileTransfer methods and hands /guestFile/ requests here first), like guest.go.
//
// The "guest" of every powered-on VM is this machine, with the login of guest.go. As on ESXi:
//   - InitiateFileTransferToGuest checks the path (absolute, its folder exists, not a folder, FileAlreadyExists
//     unless overwrite) and returns a one-time URL "https://*/guestFile?id=…&token=…" whose host the client
//     replaces with the one it connected to; a PUT of exactly fileSize bytes writes the file, which appears only
//     when complete (a short upload leaves nothing), then the POSIX attributes are applied (permissions,
//     modification and access time, owner and group).
//   - ListFilesInGuest lists a folder (with . and ..) or one file, with type file|directory|symlink, size and
//     attributes (symlinkTarget for links); a missing path is FileNotFound.
//   - MakeDirectoryInGuest creates a folder (and its parents when asked); an existing one is FileAlreadyExists.
package simulator

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type guestTransfer struct {
	path    string
	size    int64
	attrs   types.BaseGuestFileAttributes
	expires time.Time
}

var (
	transferMu sync.Mutex
	transfers  = map[string]*guestTransfer{}
)

// guestFileFault: the login of guest.go, then an absolute path, as ESXi checks them.
func guestFileFault(vmRef types.ManagedObjectReference, auth types.BaseGuestAuthentication, path string) *soap.Fault {
	if fault := guestLoginFault(vmRef, auth); fault != nil {
		return fault
	}
	if !filepath.IsAbs(path) {
		return Fault("the guest path must be absolute", &types.GuestPermissionDenied{})
	}
	return nil
}

func (m *GuestFileManager) InitiateFileTransferToGuest(req *types.InitiateFileTransferToGuest) soap.HasFault {
	body := new(methods.InitiateFileTransferToGuestBody)
	path := req.GuestFilePath
	if fault := guestFileFault(req.Vm, req.Auth, path); fault != nil {
		body.Fault_ = fault
		return body
	}
	if info, err := os.Stat(filepath.Dir(path)); err != nil || !info.IsDir() {
		body.Fault_ = Fault("the folder does not exist", &types.FileNotFound{FileFault: types.FileFault{File: filepath.Dir(path)}})
		return body
	}
	if info, err := os.Lstat(path); err == nil {
		if info.IsDir() {
			body.Fault_ = Fault("the path is a folder", &types.NotAFile{FileFault: types.FileFault{File: path}})
			return body
		}
		if !req.Overwrite {
			body.Fault_ = Fault("the file exists", &types.FileAlreadyExists{FileFault: types.FileFault{File: path}})
			return body
		}
	}
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	token := hex.EncodeToString(raw)
	transferMu.Lock()
	transfers[token] = &guestTransfer{path: path, size: req.FileSize, attrs: req.FileAttributes, expires: time.Now().Add(10 * time.Minute)}
	transferMu.Unlock()
	body.Res = &types.InitiateFileTransferToGuestResponse{Returnval: (&url.URL{
		Scheme:   "https",
		Host:     "*",
		Path:     guestPrefix + "upload",
		RawQuery: url.Values{"id": []string{"bulwark"}, "token": []string{token}}.Encode(),
	}).String()}
	return body
}

// ServeGuest receives the uploads this file announced; any other request goes to the simulator's container path.
func ServeGuest(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("token")
	transferMu.Lock()
	transfer, ok := transfers[token]
	delete(transfers, token) // one use, as on ESXi
	transferMu.Unlock()
	if !ok {
		if r.URL.Query().Get("id") == "bulwark" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		serveContainerGuest(w, r)
		return
	}
	if r.Method != http.MethodPut {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if time.Now().After(transfer.expires) {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	temporary, err := os.CreateTemp(filepath.Dir(transfer.path), ".vcsim-upload-*")
	if err != nil {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	written, err := io.Copy(temporary, io.LimitReader(r.Body, transfer.size+1))
	closeErr := temporary.Close()
	if err != nil || closeErr != nil || written != transfer.size {
		_ = os.Remove(temporary.Name())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	applyAttributes(temporary.Name(), transfer.attrs)
	if err := os.Rename(temporary.Name(), transfer.path); err != nil {
		_ = os.Remove(temporary.Name())
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func applyAttributes(path string, attrs types.BaseGuestFileAttributes) {
	if attrs == nil {
		_ = os.Chmod(path, 0o644)
		return
	}
	base := attrs.GetGuestFileAttributes()
	if posix, ok := attrs.(*types.GuestPosixFileAttributes); ok {
		mode := os.FileMode(0o644)
		if posix.Permissions != 0 {
			mode = os.FileMode(posix.Permissions & 0o7777)
		}
		_ = os.Chmod(path, mode)
		if posix.OwnerId != nil || posix.GroupId != nil {
			uid, gid := -1, -1
			if posix.OwnerId != nil {
				uid = int(*posix.OwnerId)
			}
			if posix.GroupId != nil {
				gid = int(*posix.GroupId)
			}
			_ = os.Lchown(path, uid, gid)
		}
	}
	if base.ModificationTime != nil {
		access := *base.ModificationTime
		if base.AccessTime != nil {
			access = *base.AccessTime
		}
		_ = os.Chtimes(path, access, *base.ModificationTime)
	}
}

func guestFileInfo(path string, info os.FileInfo) types.GuestFileInfo {
	kind := "file"
	target := ""
	switch {
	case info.Mode()&os.ModeSymlink != 0:
		kind = "symlink"
		target, _ = os.Readlink(path)
	case info.IsDir():
		kind = "directory"
	}
	modified := info.ModTime()
	attrs := &types.GuestPosixFileAttributes{
		GuestFileAttributes: types.GuestFileAttributes{ModificationTime: &modified, SymlinkTarget: target},
		Permissions:         int64(info.Mode().Perm()),
	}
	if stat, ok := info.Sys().(*syscall.Stat_t); ok {
		uid, gid := int32(stat.Uid), int32(stat.Gid)
		access := time.Unix(stat.Atim.Sec, stat.Atim.Nsec)
		attrs.OwnerId, attrs.GroupId, attrs.AccessTime = &uid, &gid, &access
	}
	return types.GuestFileInfo{Path: filepath.Base(path), Type: kind, Size: info.Size(), Attributes: attrs}
}

func (m *GuestFileManager) ListFilesInGuest(req *types.ListFilesInGuest) soap.HasFault {
	body := new(methods.ListFilesInGuestBody)
	if fault := guestFileFault(req.Vm, req.Auth, req.FilePath); fault != nil {
		body.Fault_ = fault
		return body
	}
	info, err := os.Lstat(req.FilePath)
	if err != nil {
		body.Fault_ = Fault("no such file", &types.FileNotFound{FileFault: types.FileFault{File: req.FilePath}})
		return body
	}
	found := []types.GuestFileInfo{}
	if info.IsDir() {
		pattern, err := regexp.Compile(req.MatchPattern)
		if err != nil || req.MatchPattern == "" {
			pattern = regexp.MustCompile(".*")
		}
		entries, _ := os.ReadDir(req.FilePath)
		names := []string{".", ".."}
		for _, entry := range entries {
			names = append(names, entry.Name())
		}
		for _, name := range names {
			if !pattern.MatchString(name) {
				continue
			}
			full := filepath.Join(req.FilePath, name)
			if entry, err := os.Lstat(full); err == nil {
				item := guestFileInfo(full, entry)
				item.Path = name
				found = append(found, item)
			}
		}
	} else {
		found = append(found, guestFileInfo(req.FilePath, info))
		found[0].Path = strings.TrimSuffix(req.FilePath, "/")
	}
	start := int(req.Index)
	if start > len(found) {
		start = len(found)
	}
	found = found[start:]
	remaining := int32(0)
	if req.MaxResults > 0 && int(req.MaxResults) < len(found) {
		remaining = int32(len(found) - int(req.MaxResults))
		found = found[:req.MaxResults]
	}
	body.Res = &types.ListFilesInGuestResponse{Returnval: types.GuestListFileInfo{Files: found, Remaining: remaining}}
	return body
}

func (m *GuestFileManager) MakeDirectoryInGuest(req *types.MakeDirectoryInGuest) soap.HasFault {
	body := new(methods.MakeDirectoryInGuestBody)
	path := req.DirectoryPath
	if fault := guestFileFault(req.Vm, req.Auth, path); fault != nil {
		body.Fault_ = fault
		return body
	}
	if _, err := os.Lstat(path); err == nil {
		body.Fault_ = Fault("the folder exists", &types.FileAlreadyExists{FileFault: types.FileFault{File: path}})
		return body
	}
	var err error
	if req.CreateParentDirectories {
		err = os.MkdirAll(path, 0o755)
	} else {
		err = os.Mkdir(path, 0o755)
	}
	if err != nil {
		body.Fault_ = Fault(err.Error(), &types.FileNotFound{FileFault: types.FileFault{File: filepath.Dir(path)}})
		return body
	}
	body.Res = &types.MakeDirectoryInGuestResponse{}
	return body
}
