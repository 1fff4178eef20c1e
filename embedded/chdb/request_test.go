package chdb

import (
	"bufio"
	"bytes"
	"net/http/httptest"
	"path/filepath"
	"testing"

	chproto "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

func TestRequestSeparatesSettingsFromTheHTTPInterfaceOwnFields(t *testing.T) {
	r := httptest.NewRequest("POST", "/?query=SELECT+1&database=db1&default_format=Native&client_protocol_version=54460"+
		"&compress=1&decompress=1&query_id=q1&param_id=7&max_threads=2&insert_deduplication_token=p0-1-9&wait_end_of_query=1", nil)
	req, err := parseRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	if req.query != "SELECT 1" || req.database != "db1" || req.format != "Native" || req.clientRevision != 54460 ||
		!req.compress || !req.decompress || req.queryID != "q1" {
		t.Errorf("transport fields = %+v", req)
	}
	if req.params["id"] != "7" || len(req.params) != 1 {
		t.Errorf("params = %v, want id=7 only", req.params)
	}
	wantSet := "SET insert_deduplication_token = 'p0-1-9', max_threads = '2'"
	if got := req.setStatement(); got != wantSet {
		t.Errorf("SET = %q, want %q", got, wantSet)
	}
	if got := req.resetStatement(); got != "SET insert_deduplication_token = DEFAULT, max_threads = DEFAULT" {
		t.Errorf("reset = %q", got)
	}
}

func TestRequestSettingValuesCannotEscapeTheirLiteral(t *testing.T) {
	r := httptest.NewRequest("POST", "/?log_comment=x%27%2C+readonly+%3D+%270", nil) // x', readonly = '0
	req, err := parseRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := req.setStatement(), `SET log_comment = 'x\', readonly = \'0'`; got != want {
		t.Errorf("SET = %q, want %q", got, want)
	}
}

func TestRequestWithoutFormatAnswersTabSeparatedAndTheHeaderCanChooseIt(t *testing.T) {
	tests := []struct {
		name, header, want string
	}{
		{"no format anywhere", "", "TabSeparated"},
		{"X-ClickHouse-Format header", "JSONEachRow", "JSONEachRow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/?query=SELECT+1", nil)
			if tt.header != "" {
				r.Header.Set("X-ClickHouse-Format", tt.header)
			}
			req, err := parseRequest(r)
			if err != nil {
				t.Fatal(err)
			}
			if req.format != tt.want {
				t.Errorf("format = %q, want %q", req.format, tt.want)
			}
		})
	}
}

func TestInsertWithDataInTheBodyBecomesInsertSelectFromTheSpooledFile(t *testing.T) {
	tests := []struct {
		name, query, want string
	}{
		{
			"whole table",
			"INSERT INTO events FORMAT Native",
			"INSERT INTO events SELECT * FROM file('/tmp/x.bin', 'Native')",
		},
		{
			"column list keeps its order",
			"INSERT INTO db.events (b, a) FORMAT Native",
			"INSERT INTO db.events (b, a) SELECT * FROM file('/tmp/x.bin', 'Native')",
		},
		{
			"statement settings move after the SELECT",
			"INSERT INTO events (a) SETTINGS insert_deduplication_token = 'k' FORMAT Native",
			"INSERT INTO events (a) SELECT * FROM file('/tmp/x.bin', 'Native') SETTINGS insert_deduplication_token = 'k'",
		},
		{
			"lower case and another format",
			"insert into events format JSONEachRow",
			"insert into events SELECT * FROM file('/tmp/x.bin', 'JSONEachRow')",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head, format, ok := splitInsert(tt.query)
			if !ok {
				t.Fatalf("%q not recognised as an insert with data in the body", tt.query)
			}
			if got := insertFromFile(head, format, "/tmp/x.bin"); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestStatementsThatAreNotInsertsWithBodyDataRunAsSent(t *testing.T) {
	for _, q := range []string{
		"SELECT 1 FORMAT Native",
		"INSERT INTO t VALUES (1)",
		"INSERT INTO t SELECT * FROM numbers(3)",
		"",
	} {
		if _, _, ok := splitInsert(q); ok {
			t.Errorf("%q taken for an insert with data in the body", q)
		}
	}
}

func TestHelloIsAnsweredAtTheClientRevisionAndReportsRevisionZero(t *testing.T) {
	const clientRevision = 54460
	data, err := helloAnswer(ServerInfo{DisplayName: "vm", Version: "26.7.2.1", Timezone: "Etc/UTC"}, clientRevision)
	if err != nil {
		t.Fatal(err)
	}
	block := proto.Block{}
	if err := block.Decode(chproto.NewReader(bufio.NewReader(bytes.NewReader(data))), clientRevision); err != nil {
		t.Fatalf("clickhouse-go cannot decode the hello at its revision: %v", err)
	}
	if block.Rows() != 1 || len(block.Columns) != 4 {
		t.Fatalf("hello has %d rows, %d columns; want 1, 4", block.Rows(), len(block.Columns))
	}
	var name, version, tz string
	var revision uint32
	for i, dest := range []any{&name, &version, &revision, &tz} {
		if err := block.Columns[i].ScanRow(dest, 0); err != nil {
			t.Fatalf("column %d: %v", i, err)
		}
	}
	if name != "vm" || version != "26.7.2.1" || revision != 0 || tz != "Etc/UTC" {
		t.Errorf("hello = (%q, %q, %d, %q), want (vm, 26.7.2.1, 0, Etc/UTC)", name, version, revision, tz)
	}
}

func TestHelloQueryIsRecognisedHoweverItIsSpaced(t *testing.T) {
	for q, want := range map[string]bool{
		"SELECT displayName(), version(), revision(), timezone()":        true,
		"  select displayName(),  version(), revision(), timezone() ;\n": true,
		"SELECT version()": false,
	} {
		if got := isHello(q); got != want {
			t.Errorf("isHello(%q) = %v, want %v", q, got, want)
		}
	}
}

func TestEngineErrorTextBecomesAnExceptionWithItsCode(t *testing.T) {
	tests := []struct {
		name, text string
		code       int
		message    string
	}{
		{"coded message", "Code: 60. DB::Exception: Unknown table 'x'. (UNKNOWN_TABLE)\n", 60, "DB::Exception: Unknown table 'x'. (UNKNOWN_TABLE)"},
		{"message without a code", "connection closed", codeUnknownException, "DB::Exception: connection closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex := parseException(tt.text)
			if ex.Code != tt.code || ex.Message != tt.message {
				t.Errorf("got (%d, %q), want (%d, %q)", ex.Code, ex.Message, tt.code, tt.message)
			}
		})
	}
}

func TestLibraryPathPrefersOptionThenEnvThenFetchCache(t *testing.T) {
	t.Setenv(CacheDirEnv, "/cache")
	tests := []struct {
		name, option, env, want string
	}{
		{"option wins", "/opt/lib.so", "/env/lib.so", "/opt/lib.so"},
		{"then CHDB_LIB_PATH", "", "/env/lib.so", "/env/lib.so"},
		{"then the fetch cache", "", "", filepath.Join("/cache", "libchdb.so")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(LibraryEnv, tt.env)
			if got, _ := LibraryPath(tt.option); got != tt.want {
				t.Errorf("LibraryPath = %q, want %q", got, tt.want)
			}
		})
	}
}
