package store_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/store"
)

// A ClickHouse that accepts connections but never answers fails Open after
// clickhouse.read_timeout, not after the library's minutes-long default.
func TestAClickHouseThatNeverAnswersFailsAfterTheReadTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	c := config.Default().ClickHouse
	c.Addr = []string{ln.Addr().String()}
	c.DialTimeout, c.ReadTimeout = time.Second, 2*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	st, err := store.Open(ctx, c)
	if err == nil {
		st.Close()
		t.Fatal("Open succeeded against a server that never answers")
	}
	if d := time.Since(start); d > 5*time.Second { // the default dial_timeout alone is 10 s
		t.Fatalf("Open took %v to fail with read_timeout 2s: %v", d, err)
	}
	if !strings.Contains(err.Error(), "clickhouse.dial_timeout 1s, read_timeout 2s") {
		t.Errorf("the error does not name the keys that set the timeouts: %v", err)
	}
	t.Logf("failed after %v: %v", time.Since(start).Round(100*time.Millisecond), err)
}
