package dashboards

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/embedded/chdb"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/store"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestEveryClickHouseQueryReturnsRowsOnWhatTheDemoStored runs `tokenwatch
// demo` (its own process: broker, engine, generator with attacks, pipeline)
// and, while it runs, every ClickHouse query of the three boards against the
// demo's engine over its HTTP interface. A panel that shows nothing on demo
// data fails.
func TestEveryClickHouseQueryReturnsRowsOnWhatTheDemoStored(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo")
	}
	if p, _ := chdb.LibraryPath(""); func() bool { st, err := os.Stat(p); return err != nil || st.Size() == 0 }() {
		testkit.Require(t, "the embedded ClickHouse engine (libchdb.so)", chdb.FetchHint)
	}
	began := time.Now()
	bin := filepath.Join(t.TempDir(), "tokenwatch")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/tokenwatch/tokenwatch/cmd/tokenwatch").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built the binary in %s", time.Since(began).Round(time.Second))
	chAddr := freeAddr(t)
	var logs bytes.Buffer
	// 40 s at 45x: half an hour of traffic, so the attack scenarios play out
	// and revocation results (final after the 10-minute horizon) are stored.
	demo := exec.Command(bin, "demo", "--duration", "40s", "--speed", "45", "--rate", "3000",
		"--clickhouse-listen", chAddr, "--metrics-listen", "127.0.0.1:0")
	demo.Stdout, demo.Stderr = &logs, &logs
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- demo.Wait() }()
	t.Cleanup(func() {
		_ = demo.Process.Kill()
		<-exited
	})

	c := config.Default().ClickHouse
	c.Addr, c.Database = []string{chAddr}, "tokenwatch"
	ctx := context.Background()
	var s *store.Store
	deadline := time.Now().Add(2 * time.Minute)
	for s == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the demo's ClickHouse never answered; logs:\n%s", logs.String())
		}
		time.Sleep(500 * time.Millisecond)
		if st, err := store.Open(ctx, c); err == nil {
			s = st
		}
	}
	defer s.Close()
	// Wait until the demo has stored revocation results and findings.
	count := func(sql string) uint64 {
		var n uint64
		if err := s.Conn().QueryRow(ctx, sql).Scan(&n); err != nil {
			return 0
		}
		return n
	}
	for count("SELECT count() FROM tokenwatch.revocations WHERE session_id != '' AND service != ''") == 0 || count("SELECT count() FROM tokenwatch.findings") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the demo stored no revocations or findings in time; logs:\n%s", logs.String())
		}
		time.Sleep(time.Second)
	}
	t.Logf("demo data ready after %s", time.Since(began).Round(time.Second))
	var session, request string
	var from time.Time
	_ = s.Conn().QueryRow(ctx, "SELECT session_id FROM tokenwatch.revocations WHERE session_id != '' AND service != '' ORDER BY revoked_at LIMIT 1").Scan(&session)
	_ = s.Conn().QueryRow(ctx, "SELECT request_id FROM tokenwatch.events WHERE request_id != '' GROUP BY request_id HAVING count() > 1 LIMIT 1").Scan(&request)
	if err := s.Conn().QueryRow(ctx, "SELECT min(ts) FROM tokenwatch.events").Scan(&from); err != nil {
		t.Fatal(err)
	}
	to := time.Now().Add(time.Minute)
	vars := map[string]string{"service": AllValue, "issuer": AllValue, "region": AllValue, "request_id": request, "session_id": session}

	ran := 0
	for _, b := range generate(t, Options{Database: "tokenwatch"}) {
		for _, q := range b.Queries() {
			if q.Datasource != ClickHousePluginID {
				continue
			}
			ran++
			sql := q.ExpandSQL(from, to, vars)
			n, err := rowsOf(ctx, s, sql)
			if err != nil {
				t.Errorf("%s / %s: fails on the demo's ClickHouse: %v\n%s", b.UID, q.Panel, err, sql)
				continue
			}
			if n == 0 {
				t.Errorf("%s / %s: no rows on the demo's data (session %q, request %q):\n%s", b.UID, q.Panel, session, request, sql)
			}
		}
	}
	if ran < 20 {
		t.Fatalf("ran %d ClickHouse queries; the boards should have more", ran)
	}
	// Ctrl-C stops the demo early, still flushing and printing its summary.
	if err := demo.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil || !bytes.Contains(logs.Bytes(), []byte("stopped early")) {
			t.Errorf("after Ctrl-C the demo exited with %v and no early-stop summary:\n%s", err, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Errorf("the demo did not stop within 60 s of Ctrl-C")
	}
	t.Logf("%d ClickHouse queries returned rows on the demo's data after %s", ran, time.Since(began).Round(time.Second))
}
