package broker

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

func TestBrokerLogsReachSlogAtTheirOwnLevel(t *testing.T) {
	tests := []struct {
		name    string
		level   kfake.LogLevel
		handler slog.Level
		logged  bool
	}{
		{"an error reaches an error logger", kfake.LogLevelError, slog.LevelError, true},
		{"a warning reaches a warn logger", kfake.LogLevelWarn, slog.LevelWarn, true},
		{"info is hidden from a warn logger", kfake.LogLevelInfo, slog.LevelWarn, false},
		{"info reaches an info logger", kfake.LogLevelInfo, slog.LevelInfo, true},
		{"debug detail is hidden from an info logger", kfake.LogLevelDebug, slog.LevelInfo, false},
		{"debug detail reaches a debug logger", kfake.LogLevelDebug, slog.LevelDebug, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: tc.handler}))
			slogAdapter{logger}.Logf(tc.level, "handled %s", "Fetch")
			if got := strings.Contains(out.String(), "handled Fetch"); got != tc.logged {
				t.Fatalf("logged=%v, want %v: %q", got, tc.logged, out.String())
			}
		})
	}
}

// lockedBuffer is written by the broker's goroutines and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestBrokerLogsAMalformedRequestToTheGivenLogger(t *testing.T) {
	var out lockedBuffer
	logger := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := startBroker(t, Options{Logger: logger})

	conn, err := net.Dial("tcp", b.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A Produce v9 header cut off after the correlation id: a frame no client would send.
	if _, err := conn.Write([]byte{0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "embedded-broker") {
		if time.Now().After(deadline) {
			t.Fatalf("the malformed request left no log line: %q", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
