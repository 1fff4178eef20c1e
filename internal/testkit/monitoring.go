package testkit

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const (
	// monitoringStartTimeout bounds the wait for /-/ready; both start in well under a second
	// when the machine is idle.
	monitoringStartTimeout = time.Minute
	installMonitoring      = "run scripts/monitoring.sh install (Debian packages prometheus and prometheus-alertmanager)"

	// defaultPrometheusConfig evaluates rules every second so that tests need not wait long.
	defaultPrometheusConfig = "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
	// defaultAlertmanagerConfig accepts alerts and sends them nowhere: enough to push alerts
	// and read them back through the v2 API.
	defaultAlertmanagerConfig = "route:\n  receiver: discard\nreceivers:\n  - name: discard\n"
)

// Promtool returns the path of promtool (for `promtool check rules` and `promtool test rules`),
// skipping the test when it is not installed.
func Promtool(t testing.TB) string {
	t.Helper()
	return lookBinary(t, "promtool", "promtool")
}

// Prometheus starts a Prometheus server for this test on a free loopback port, with its TSDB in
// a temporary directory, and returns its base URL (http://127.0.0.1:port) once /-/ready answers.
// configYAML is the prometheus.yml (empty: one-second scrape and evaluation intervals, nothing
// scraped). When rulesDir is not empty, every *.yml and *.yaml file in it is loaded as rule
// files, and configYAML must then not name rule_files itself. The server accepts remote writes
// (/api/v1/write), so that a test can load samples, and is killed when the test ends.
func Prometheus(t testing.TB, configYAML string, rulesDir string) (baseURL string) {
	t.Helper()
	bin := lookBinary(t, "Prometheus", "prometheus")
	dir := t.TempDir()
	config, err := prometheusConfig(configYAML, rulesDir)
	if err != nil {
		t.Fatalf("preparing the Prometheus config: %v", err)
	}
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configPath, config, 0o644); err != nil {
		t.Fatalf("writing the Prometheus config: %v", err)
	}
	return startServer(t, "Prometheus", dir, func(addr string) *exec.Cmd {
		return exec.Command(bin,
			"--config.file="+configPath,
			"--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+addr,
			"--web.enable-lifecycle",
			"--web.enable-remote-write-receiver",
			"--log.level=warn",
		)
	})
}

// prometheusConfig adds the rule files of rulesDir to configYAML; it is plain YAML editing, so
// the caller's config is otherwise passed through as written.
func prometheusConfig(configYAML, rulesDir string) ([]byte, error) {
	if configYAML == "" {
		configYAML = defaultPrometheusConfig
	}
	if rulesDir == "" {
		return []byte(configYAML), nil
	}
	abs, err := filepath.Abs(rulesDir)
	if err != nil {
		return nil, fmt.Errorf("resolving the rules directory %q: %w", rulesDir, err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(configYAML), &doc); err != nil {
		return nil, fmt.Errorf("parsing the Prometheus config: %w", err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	if _, ok := doc["rule_files"]; ok {
		return nil, fmt.Errorf("the config names rule_files and rulesDir %q is set too: use one", rulesDir)
	}
	doc["rule_files"] = []string{filepath.Join(abs, "*.yml"), filepath.Join(abs, "*.yaml")}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("writing the Prometheus config: %w", err)
	}
	return out, nil
}

// Alertmanager starts an Alertmanager for this test on a free loopback port, with its storage in
// a temporary directory and clustering off, and returns its base URL once /-/ready answers.
// configYAML is the alertmanager.yml (empty: one receiver that sends nowhere). It is killed when
// the test ends.
func Alertmanager(t testing.TB, configYAML string) (baseURL string) {
	t.Helper()
	bin := lookBinary(t, "Alertmanager", "prometheus-alertmanager", "alertmanager")
	dir := t.TempDir()
	if configYAML == "" {
		configYAML = defaultAlertmanagerConfig
	}
	configPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(configPath, []byte(configYAML), 0o644); err != nil {
		t.Fatalf("writing the Alertmanager config: %v", err)
	}
	return startServer(t, "Alertmanager", dir, func(addr string) *exec.Cmd {
		return exec.Command(bin,
			"--config.file="+configPath,
			"--storage.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+addr,
			// An empty address turns clustering off; otherwise every instance binds :9094.
			"--cluster.listen-address=",
			"--log.level=warn",
		)
	})
}

// lookBinary finds the first of names on PATH (Debian and upstream name Alertmanager
// differently), or skips the test.
func lookBinary(t testing.TB, what string, names ...string) string {
	t.Helper()
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	Require(t, what, installMonitoring)
	return ""
}

// startServer runs the command that command builds for a free loopback address, logging to a
// file in dir, waits for /-/ready, and registers the kill. The Cleanup is registered after the
// caller's t.TempDir, so it runs first and the process is gone before its directory is removed.
func startServer(t testing.TB, what, dir string, command func(addr string) *exec.Cmd) string {
	t.Helper()
	ports, err := freeLoopbackPorts(1)
	if err != nil {
		t.Fatalf("starting %s: %v", what, err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("creating the %s log: %v", what, err)
	}
	proc, err := startOwned(command(addr), logFile)
	if err != nil {
		t.Fatalf("starting %s: %v", what, err)
	}
	t.Cleanup(func() {
		proc.kill()
		if t.Failed() {
			t.Logf("%s log (last lines of %s):\n%s", what, logPath, tailFile(logPath, 20))
		}
	})

	baseURL := "http://" + addr
	if err := waitReady(baseURL, proc); err != nil {
		t.Fatalf("%s on %s: %v; last lines of its log:\n%s", what, addr, err, tailFile(logPath, 20))
	}
	return baseURL
}

// waitReady polls the /-/ready endpoint that Prometheus and Alertmanager both serve.
func waitReady(baseURL string, proc *ownedProcess) error {
	ctx, cancel := context.WithTimeout(context.Background(), monitoringStartTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/-/ready", nil)
		if err != nil {
			return fmt.Errorf("building the readiness request: %w", err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-proc.done:
			return fmt.Errorf("exited before it was ready: %v", proc.err)
		case <-ctx.Done():
			return fmt.Errorf("not ready within %v (last answer: %s)", monitoringStartTimeout, last)
		case <-tick.C:
		}
	}
}
