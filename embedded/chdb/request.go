package chdb

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// request is one HTTP-interface call, decoded from the URL and headers the
// way ClickHouse's HTTP handler reads them.
type request struct {
	query          string            // the `query` URL parameter (may be empty: SQL in the body)
	format         string            // default_format / X-ClickHouse-Format; TabSeparated otherwise
	database       string            // database / X-ClickHouse-Database
	settings       []setting         // every other parameter, applied with SET
	params         map[string]string // param_<name>, bound to {name:Type}
	compress       bool              // compress=1: answer in ClickHouse compressed blocks
	decompress     bool              // decompress=1: the body is in ClickHouse compressed blocks
	blockMethod    string            // network_compression_method for compress=1 (LZ4 when empty)
	httpGzip       bool              // enable_http_compression=1: gzip the answer if the client accepts it
	clientRevision uint64            // client_protocol_version, the revision of the hello answer
	queryID        string
}

type setting struct{ name, value string }

// transportParams are URL parameters of the HTTP interface itself, not
// settings; they must not be sent to SET. The compression settings are among
// them because this server, not the engine, compresses the answer: sending
// them to SET would only cost two engine calls per request.
var transportParams = []string{
	"query", "database", "default_format", "client_protocol_version", "compress", "decompress",
	"query_id", "quota_key", "user", "password", "session_id", "session_timeout", "session_check",
	"buffer_size", "wait_end_of_query", "role", "stacktrace",
	"network_compression_method", "network_zstd_compression_level", "enable_http_compression", "http_zlib_compression_level",
}

// settingName is what a ClickHouse setting name looks like; anything else is
// refused so a URL cannot smuggle SQL into the SET statement.
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func parseRequest(r *http.Request) (*request, error) {
	values := r.URL.Query()
	if r.Method == http.MethodPost && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		// Some HTTP datasources send the query as a form field; curl -d
		// sends the SQL itself with this same content type, and ClickHouse
		// takes that body as the query. So: a form only when it has a query
		// field, else the body as it came.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, fmt.Errorf("read body: %w", err)
		}
		if form, perr := url.ParseQuery(string(body)); perr == nil && form.Get("query") != "" {
			for k, v := range form {
				values[k] = v
			}
			body = nil
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	req := &request{
		query:    values.Get("query"),
		format:   firstNonEmpty(values.Get("default_format"), r.Header.Get("X-ClickHouse-Format"), "TabSeparated"),
		database: firstNonEmpty(values.Get("database"), r.Header.Get("X-ClickHouse-Database")),
		params:   map[string]string{},
		queryID:  firstNonEmpty(values.Get("query_id"), r.Header.Get("X-ClickHouse-Query-Id")),
		compress: values.Get("compress") == "1",
		// decompress=1 announces a compressed body.
		decompress:  values.Get("decompress") == "1",
		blockMethod: values.Get("network_compression_method"),
		httpGzip:    values.Get("enable_http_compression") == "1",
	}
	if v := values.Get("client_protocol_version"); v != "" {
		rev, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("client_protocol_version %q: %w", v, err)
		}
		req.clientRevision = rev
	}
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	slices.Sort(names) // a stable SET statement, easier to read in logs
	for _, name := range names {
		value := values.Get(name)
		switch {
		case strings.HasPrefix(name, "param_"):
			req.params[strings.TrimPrefix(name, "param_")] = value
		case slices.Contains(transportParams, name):
		case !settingName.MatchString(name):
			return nil, fmt.Errorf("URL parameter %q is not a setting name", name)
		default:
			req.settings = append(req.settings, setting{name, value})
		}
	}
	return req, nil
}

// setStatement applies the request's settings; resetStatement undoes it.
// Values are sent as string literals, which ClickHouse converts to each
// setting's type as it does for URL parameters.
func (r *request) setStatement() string {
	if len(r.settings) == 0 {
		return ""
	}
	parts := make([]string, len(r.settings))
	for i, s := range r.settings {
		parts[i] = s.name + " = " + quoteString(s.value)
	}
	return "SET " + strings.Join(parts, ", ")
}

func (r *request) resetStatement() string {
	if len(r.settings) == 0 {
		return ""
	}
	parts := make([]string, len(r.settings))
	for i, s := range r.settings {
		parts[i] = s.name + " = DEFAULT"
	}
	return "SET " + strings.Join(parts, ", ")
}

// quoteString makes s a ClickHouse string literal.
func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// quoteIdentifier makes s a ClickHouse identifier.
func quoteIdentifier(s string) string {
	return "`" + strings.NewReplacer(`\`, `\\`, "`", "\\`").Replace(s) + "`"
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// insertWithFormat matches "INSERT INTO <table> [(<columns>)] [SETTINGS ...]
// FORMAT <name>" with nothing after the format name, the form a client sends
// when the data follows in the body.
var insertWithFormat = regexp.MustCompile(`(?is)^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$`)

// splitInsert returns the INSERT head and the data format when sql is an
// INSERT whose data comes in the body.
func splitInsert(sql string) (head, format string, ok bool) {
	m := insertWithFormat.FindStringSubmatch(sql)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// isUse reports whether sql switches the current database. The switch must
// not outlive its request: the next one starts in its own database, as with
// ClickHouse's stateless HTTP interface.
func isUse(sql string) bool {
	f := strings.Fields(sql)
	return len(f) > 0 && strings.EqualFold(f[0], "USE")
}
