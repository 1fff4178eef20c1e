//go:build unix && !linux

package testkit

import (
	"os/exec"
	"syscall"
)

// ownProcess gives the component its own process group; without Linux's Pdeathsig, a component
// outlives a test binary that dies without running its cleanups.
func ownProcess(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
