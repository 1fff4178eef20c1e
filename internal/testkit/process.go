package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// freeLoopbackPorts asks the kernel for n unused ports on 127.0.0.1. The ports are released
// before the component binds them; another process could take one in between, which a test
// then reports as a failed start rather than a silent clash.
func freeLoopbackPorts(n int) ([]int, error) {
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free loopback port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// killGroup kills a process started with ownProcess together with its children (Setpgid makes
// the process the leader of its own group).
func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// tailFile returns the last lines of a component's log, for an error that says why it did not
// start.
func tailFile(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	data = bytes.TrimRight(data, "\n")
	for i, seen := len(data)-1, 0; i >= 0; i-- {
		if data[i] == '\n' {
			seen++
			if seen == lines {
				data = data[i+1:]
				break
			}
		}
	}
	return string(data)
}

// ownerFile marks a temporary state directory with the pid of the test binary that made it.
const ownerFile = "owner.pid"

// makeOwnedTempDir makes a temporary directory for a component that outlives a single test, and
// first removes the directories of earlier test binaries that have exited: those binaries had
// their component killed by the kernel (see ownProcess) and had no chance to clean up.
func makeOwnedTempDir(pattern string) (string, error) {
	stale, _ := filepath.Glob(filepath.Join(os.TempDir(), pattern))
	for _, dir := range stale {
		raw, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(string(bytes.TrimSpace(raw)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", fmt.Errorf("making a temporary directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("marking %s with its owner: %w", dir, err)
	}
	return dir, nil
}

// findRepoFile finds a file of this repository (e.g. scripts/kafka.sh) from the working
// directory, which go test sets to the package under test, by walking up to the module root.
func findRepoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding %s: %w", rel, err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			path := filepath.Join(dir, rel)
			if _, err := os.Stat(path); err != nil {
				return "", fmt.Errorf("finding %s in the module at %s: %w", rel, dir, err)
			}
			return path, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("finding %s: no go.mod above the working directory", rel)
		}
		dir = parent
	}
}

// ownedProcess is a started component whose exit several parties can wait for: the readiness
// poll (to fail fast when it dies) and the cleanup (to be sure it is gone).
type ownedProcess struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited; err is then set
	err  error
}

// startOwned starts cmd tied to this test binary (ownProcess), its output going to logFile,
// which is closed when the process exits.
func startOwned(cmd *exec.Cmd, logFile *os.File) (*ownedProcess, error) {
	cmd.Stdout, cmd.Stderr = logFile, logFile
	ownProcess(cmd)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &ownedProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// kill kills the process with its children and waits until it has exited.
func (p *ownedProcess) kill() {
	killGroup(p.cmd.Process.Pid)
	<-p.done
}
