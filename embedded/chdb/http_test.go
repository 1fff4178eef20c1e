package chdb_test

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/embedded/chdb"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
)

// httpAnswer is what a plain HTTP client (curl, Grafana's datasource
// health check) gets back.
type httpAnswer struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, req *http.Request) httpAnswer {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	var r io.Reader = res.Body
	if res.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(res.Body)
		if err != nil {
			t.Fatalf("gzip answer: %v", err)
		}
		r = gz
	}
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return httpAnswer{res.StatusCode, res.Header, string(body)}
}

func get(t *testing.T, addr, path string, params url.Values) httpAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+path+"?"+params.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func post(t *testing.T, addr string, params url.Values, body string, header map[string]string) httpAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/?"+params.Encode(), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

func TestPlainHTTPClientsLikeCurlAndGrafana(t *testing.T) {
	addr, database := testkit.ClickHouse(t)
	db := url.Values{"database": {database}}
	if a := post(t, addr, db, "CREATE TABLE t (id UInt32, name String) ENGINE = MergeTree ORDER BY id", nil); a.status != http.StatusOK {
		t.Fatalf("create table: %d %s", a.status, a.body)
	}

	tests := []struct {
		name       string
		call       func() httpAnswer
		wantStatus int
		wantBody   string
		wantHeader map[string]string
	}{
		{
			name:       "ping answers Ok",
			call:       func() httpAnswer { return get(t, addr, "/ping", nil) },
			wantStatus: http.StatusOK, wantBody: "Ok.\n",
		},
		{
			name:       "GET with a query answers TabSeparated by default",
			call:       func() httpAnswer { return get(t, addr, "/", url.Values{"query": {"SELECT 1, 'a'"}}) },
			wantStatus: http.StatusOK, wantBody: "1\ta\n",
		},
		{
			name: "SQL in the body with its own FORMAT clause",
			call: func() httpAnswer {
				return post(t, addr, nil, "SELECT number AS n FROM numbers(2) FORMAT JSONEachRow", nil)
			},
			wantStatus: http.StatusOK, wantBody: "{\"n\":0}\n{\"n\":1}\n",
			wantHeader: map[string]string{"Content-Type": "application/json; charset=UTF-8"},
		},
		{
			name: "default_format picks the answer's format",
			call: func() httpAnswer {
				return post(t, addr, url.Values{"default_format": {"CSV"}}, "SELECT 1, 'x'", nil)
			},
			wantStatus: http.StatusOK, wantBody: "1,\"x\"\n",
		},
		{
			name: "inline JSONEachRow insert in the body",
			call: func() httpAnswer {
				return post(t, addr, db, "INSERT INTO t FORMAT JSONEachRow {\"id\":1,\"name\":\"inline\"}", nil)
			},
			wantStatus: http.StatusOK, wantBody: "",
		},
		{
			name: "insert with the query in the URL and CSV data in the body",
			call: func() httpAnswer {
				return post(t, addr, url.Values{"database": {database}, "query": {"INSERT INTO t FORMAT CSV"}}, "2,csv\n3,csv\n", nil)
			},
			wantStatus: http.StatusOK, wantBody: "",
		},
		{
			name: "insert of JSONEachRow with keys in another order than the table's",
			call: func() httpAnswer {
				return post(t, addr, url.Values{"database": {database}, "query": {"INSERT INTO t FORMAT JSONEachRow"}}, "{\"name\":\"json\",\"id\":4}\n", nil)
			},
			wantStatus: http.StatusOK, wantBody: "",
		},
		{
			name: "the database header selects the database",
			call: func() httpAnswer {
				return post(t, addr, nil, "SELECT id, name FROM t ORDER BY id", map[string]string{"X-ClickHouse-Database": database})
			},
			wantStatus: http.StatusOK, wantBody: "1\tinline\n2\tcsv\n3\tcsv\n4\tjson\n",
		},
		{
			name:       "the database is per request: the next one is back in default",
			call:       func() httpAnswer { return post(t, addr, nil, "SELECT currentDatabase()", nil) },
			wantStatus: http.StatusOK, wantBody: "default\n",
		},
		{
			name: "USE in one request does not move the next",
			call: func() httpAnswer {
				if a := post(t, addr, nil, "USE "+database, nil); a.status != http.StatusOK {
					t.Fatalf("USE: %d %s", a.status, a.body)
				}
				return post(t, addr, nil, "SELECT currentDatabase()", nil)
			},
			wantStatus: http.StatusOK, wantBody: "default\n",
		},
		{
			name: "a setting in the URL applies to its request",
			call: func() httpAnswer {
				return post(t, addr, url.Values{"max_result_rows": {"7"}}, "SELECT getSetting('max_result_rows')", nil)
			},
			wantStatus: http.StatusOK, wantBody: "7\n",
		},
		{
			name:       "and is reset after it",
			call:       func() httpAnswer { return post(t, addr, nil, "SELECT getSetting('max_result_rows')", nil) },
			wantStatus: http.StatusOK, wantBody: "0\n",
		},
		{
			name: "query parameters from param_ URL fields",
			call: func() httpAnswer {
				return post(t, addr, url.Values{"param_id": {"3"}, "database": {database}}, "SELECT name FROM t WHERE id = {id:UInt32}", nil)
			},
			wantStatus: http.StatusOK, wantBody: "csv\n",
		},
		{
			name:       "unknown table is a 404 with the exception code",
			call:       func() httpAnswer { return get(t, addr, "/", url.Values{"query": {"SELECT * FROM no_such_table"}}) },
			wantStatus: http.StatusNotFound, wantBody: "Code: 60. DB::Exception:",
			wantHeader: map[string]string{"X-ClickHouse-Exception-Code": "60"},
		},
		{
			name:       "a syntax error is a 400",
			call:       func() httpAnswer { return post(t, addr, nil, "SELEC 1", nil) },
			wantStatus: http.StatusBadRequest, wantBody: "Code: 62. DB::Exception: Syntax error",
			wantHeader: map[string]string{"X-ClickHouse-Exception-Code": "62"},
		},
		{
			name:       "a URL field that is not a setting name is refused",
			call:       func() httpAnswer { return post(t, addr, url.Values{"x=1; DROP": {"1"}}, "SELECT 1", nil) },
			wantStatus: http.StatusBadRequest, wantBody: "Code: 36.",
		},
		{
			name: "gzip answer when the client accepts it and enables HTTP compression",
			call: func() httpAnswer {
				return post(t, addr, url.Values{"enable_http_compression": {"1"}}, "SELECT 'zipped'", map[string]string{"Accept-Encoding": "gzip"})
			},
			wantStatus: http.StatusOK, wantBody: "zipped\n",
			wantHeader: map[string]string{"Content-Encoding": "gzip"},
		},
		{
			name: "a query sent as a form field, as some HTTP datasources do",
			call: func() httpAnswer {
				return post(t, addr, nil, url.Values{"query": {"SELECT 40 + 2"}}.Encode(), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
			},
			wantStatus: http.StatusOK, wantBody: "42\n",
		},
		{
			name: "curl -d 'SELECT ...': the SQL itself under a form content type",
			call: func() httpAnswer {
				return post(t, addr, nil, "SELECT 40 + 2", map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
			},
			wantStatus: http.StatusOK, wantBody: "42\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.call()
			if a.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %q", a.status, tt.wantStatus, a.body)
			}
			if tt.wantStatus == http.StatusOK && a.body != tt.wantBody {
				t.Errorf("body = %q, want %q", a.body, tt.wantBody)
			}
			if tt.wantStatus != http.StatusOK && !strings.HasPrefix(a.body, tt.wantBody) {
				t.Errorf("body = %q, want it to start with %q", a.body, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if got := a.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestServerRefusesAddressesOtherMachinesCouldReach(t *testing.T) {
	engine := testkit.ClickHouseEngine(t)
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0", "192.0.2.1:0"} {
		if s, err := chdb.Serve(t.Context(), engine, addr); err == nil {
			_ = s.Close()
			t.Errorf("Serve(%q) listened; want a refusal", addr)
		}
	}
}

func TestServerStopsWhenItsContextEnds(t *testing.T) {
	engine := testkit.ClickHouseEngine(t)
	ctx, cancel := context.WithCancel(t.Context())
	s, err := chdb.Serve(ctx, engine, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	if a := get(t, s.Addr(), "/ping", nil); a.body != "Ok.\n" {
		t.Fatalf("ping before cancel = %q", a.body)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := http.Get(s.URL() + "/ping")
		if err != nil {
			break // refused: the listener is closed
		}
		res.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("server still answers 5 s after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The engine outlives the server.
	if _, err := engine.Query("SELECT 1", ""); err != nil {
		t.Errorf("engine after the server stopped: %v", err)
	}
}
