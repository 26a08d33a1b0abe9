// Guest program execution for vcsim, whose GuestProcessManager has no methods in Debian's version: compiled by
// build.sh into a temporary copy of the simulator package, like cbt.go.
//
// The "guest" of every powered-on VM is this machine: StartProgramInGuest runs programPath with its arguments
// (through /bin/sh, as VMware Tools does on a Linux guest), in workingDirectory, with envVariables, and returns a
// pid; ListProcessesInGuest reports start and end times and the exit code. The login must be the user and
// password given by VCSIM_GUEST_USER and VCSIM_GUEST_PASSWORD (unset: every login is refused, as a guest without
// those credentials would); a wrong one gets InvalidGuestLogin, a powered-off VM GuestOperationsUnavailable.
package simulator

import (
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type guestProcess struct {
	info types.GuestProcessInfo
}

var (
	guestMu        sync.Mutex
	guestProcesses = map[int64]*guestProcess{}
	guestPid       int64 = 4000
)

func guestLoginFault(vmRef types.ManagedObjectReference, auth types.BaseGuestAuthentication) *soap.Fault {
	vm, ok := Map.Get(vmRef).(*VirtualMachine)
	if !ok {
		return Fault("", &types.ManagedObjectNotFound{Obj: vmRef})
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		return Fault("the VM is not powered on", &types.GuestOperationsUnavailable{})
	}
	login, ok := auth.(*types.NamePasswordAuthentication)
	user, password := os.Getenv("VCSIM_GUEST_USER"), os.Getenv("VCSIM_GUEST_PASSWORD")
	if !ok || user == "" || login.Username != user || login.Password != password {
		return Fault("invalid guest login", &types.InvalidGuestLogin{})
	}
	return nil
}

func (m *GuestProcessManager) StartProgramInGuest(req *types.StartProgramInGuest) soap.HasFault {
	body := new(methods.StartProgramInGuestBody)
	if fault := guestLoginFault(req.Vm, req.Auth); fault != nil {
		body.Fault_ = fault
		return body
	}
	spec := req.Spec.GetGuestProgramSpec()
	command := exec.Command("/bin/sh", "-c", spec.ProgramPath+" "+spec.Arguments)
	command.Dir = spec.WorkingDirectory
	command.Env = append(os.Environ(), spec.EnvVariables...)
	if err := command.Start(); err != nil {
		body.Fault_ = Fault(err.Error(), &types.GuestPermissionDenied{})
		return body
	}
	guestMu.Lock()
	guestPid++
	pid := guestPid
	process := &guestProcess{info: types.GuestProcessInfo{
		Name:      spec.ProgramPath,
		Pid:       pid,
		Owner:     os.Getenv("VCSIM_GUEST_USER"),
		CmdLine:   strings.TrimSpace(spec.ProgramPath + " " + spec.Arguments),
		StartTime: time.Now(),
	}}
	guestProcesses[pid] = process
	guestMu.Unlock()
	go func() {
		err := command.Wait()
		code := int32(0)
		if err != nil {
			code = 1
			if exit, ok := err.(*exec.ExitError); ok {
				code = int32(exit.ExitCode())
			}
		}
		ended := time.Now()
		guestMu.Lock()
		process.info.EndTime = &ended
		process.info.ExitCode = code
		guestMu.Unlock()
	}()
	body.Res = &types.StartProgramInGuestResponse{Returnval: pid}
	return body
}

func (m *GuestProcessManager) ListProcessesInGuest(req *types.ListProcessesInGuest) soap.HasFault {
	body := new(methods.ListProcessesInGuestBody)
	if fault := guestLoginFault(req.Vm, req.Auth); fault != nil {
		body.Fault_ = fault
		return body
	}
	guestMu.Lock()
	defer guestMu.Unlock()
	found := []types.GuestProcessInfo{}
	for _, pid := range req.Pids {
		if process, ok := guestProcesses[pid]; ok {
			found = append(found, process.info)
		}
	}
	if len(req.Pids) == 0 {
		for _, process := range guestProcesses {
			found = append(found, process.info)
		}
	}
	body.Res = &types.ListProcessesInGuestResponse{Returnval: found}
	return body
}
