package chdb

import (
	"syscall"
	"unsafe"
)

// kernelSigaction is the kernel's struct sigaction on 64-bit Linux (handler,
// flags, restorer, mask), the layout rt_sigaction(2) reads and writes. It is
// only saved and written back, never interpreted.
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// signalSnapshot holds the disposition of every standard signal.
type signalSnapshot [32]kernelSigaction

// saveSignals records the current handler of every standard signal.
//
// Why: the Go runtime owns SIGSEGV (nil dereferences become panics), SIGURG
// (goroutine preemption), SIGPROF and friends. chDB installs its own crash
// handlers when the engine boots unless chdb_set_signal_handlers_enabled(0)
// was called first (Open does), and chdb-go found that call resetting the
// deadly signals to SIG_DFL as a side effect in some chDB versions. 26.7.2
// leaves them alone, but the restore costs microseconds and keeps Go's
// handlers in place whatever the library version does.
func saveSignals() *signalSnapshot {
	var s signalSnapshot
	for sig := 1; sig < len(s); sig++ {
		if sig == int(syscall.SIGKILL) || sig == int(syscall.SIGSTOP) {
			continue
		}
		_, _, _ = syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), 0,
			uintptr(unsafe.Pointer(&s[sig])), 8, 0, 0)
	}
	return &s
}

// restore writes back every handler that changed since the snapshot.
func (s *signalSnapshot) restore() {
	now := saveSignals()
	for sig := 1; sig < len(s); sig++ {
		if sig == int(syscall.SIGKILL) || sig == int(syscall.SIGSTOP) || now[sig] == s[sig] {
			continue
		}
		_, _, _ = syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig),
			uintptr(unsafe.Pointer(&s[sig])), 0, 8, 0, 0)
	}
}

// changed reports whether any handler differs from the snapshot.
func (s *signalSnapshot) changed() bool {
	return *saveSignals() != *s
}
