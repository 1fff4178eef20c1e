package testkit

import (
	"os/exec"
	"syscall"
)

// ownProcess ties a component's process to the test binary. Setpgid gives it its own process
// group so that killGroup also reaches its children; Pdeathsig has the kernel kill it when the
// test binary dies, even when a test panics, times out or is interrupted, where no Cleanup runs.
// (The kernel watches the thread that forked; Go only ends a thread when a goroutine that locked
// it exits, which test support never does.)
func ownProcess(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
