package chdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Server answers ClickHouse's HTTP interface on a loopback address and runs
// every query on an Engine, so clickhouse-go/v2 (Protocol: HTTP), curl and
// Grafana's ClickHouse datasource use the embedded engine as they would a
// ClickHouse server. It is a stand-in for the HTTP interface only (no native
// TCP protocol, no sessions, no external tables), and runs one query at a
// time.
type Server struct {
	engine   *Engine
	listener net.Listener
	http     *http.Server
	spoolDir string
	log      *slog.Logger
	// stopOnDone cancels the watch that closes the server with Serve's ctx.
	stopOnDone func() bool
}

// Serve listens on addr (use "127.0.0.1:0" for a free port) and serves until
// ctx is done or Close is called. The engine stays open: its owner closes it.
// addr must be a loopback address: the server has no authentication, so it
// must not be reachable from other machines.
func Serve(ctx context.Context, engine *Engine, addr string) (*Server, error) {
	if err := requireLoopback(addr); err != nil {
		return nil, err
	}
	// Spooled insert bodies live in the engine's data directory, so a
	// crashed process leaves them where its data is, not scattered in /tmp.
	spoolDir, err := os.MkdirTemp(engine.DataDir(), "http-inserts-*")
	if err != nil {
		return nil, fmt.Errorf("embedded ClickHouse server: create insert spool dir: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = os.RemoveAll(spoolDir)
		return nil, fmt.Errorf("embedded ClickHouse server: listen on %s: %w", addr, err)
	}
	s := &Server{
		engine:   engine,
		listener: ln,
		spoolDir: spoolDir,
		log:      engine.log,
	}
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("embedded ClickHouse HTTP interface stopped", slog.Any("error", err))
		}
	}()
	s.stopOnDone = context.AfterFunc(ctx, func() { _ = s.Close() })
	s.log.Info("embedded ClickHouse HTTP interface listening", slog.String("addr", s.Addr()))
	return s, nil
}

// Addr is the bound host:port.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// URL is the base URL for HTTP clients, e.g. http://127.0.0.1:38123.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Close stops accepting requests, waits for the running ones and removes
// spooled insert files. It does not close the engine.
func (s *Server) Close() error {
	s.stopOnDone()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	if rmErr := os.RemoveAll(s.spoolDir); rmErr != nil && err == nil {
		err = rmErr
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("embedded ClickHouse server: close: %w", err)
	}
	return nil
}

// ServeHTTP implements the HTTP interface's endpoints: /ping, and queries on /.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/ping" || (r.URL.Path == "/" && r.Method == http.MethodGet && r.URL.RawQuery == ""):
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		_, _ = io.WriteString(w, "Ok.\n")
		return
	case r.URL.Path != "/":
		http.NotFound(w, r)
		return
	case r.Method != http.MethodGet && r.Method != http.MethodPost:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	start := time.Now()
	req, err := parseRequest(r)
	if err != nil {
		s.writeError(w, &Exception{Code: codeBadArguments, Message: "DB::Exception: " + err.Error()})
		return
	}
	body, closeBody, err := decodeBody(r.Body, r.Header.Get("Content-Encoding"), req.decompress)
	defer closeBody()
	if err != nil {
		s.writeError(w, &Exception{Code: codeBadArguments, Message: "DB::Exception: " + err.Error()})
		return
	}
	res, format, err := s.execute(req, body)
	if err != nil {
		s.log.Debug("embedded ClickHouse query failed", slog.String("query_id", req.queryID), slog.Any("error", err))
		s.writeError(w, err)
		return
	}
	s.writeResult(w, r, req, format, res)
	s.log.Debug("embedded ClickHouse query", slog.String("query_id", req.queryID),
		slog.Int("bytes", len(res.data)), slog.Duration("took", time.Since(start)))
}

// execute runs the request's statement and returns its result and format.
func (s *Server) execute(req *request, body io.Reader) (rawResult, string, error) {
	if head, format, ok := splitInsert(req.query); ok {
		res, err := s.insert(req, head, format, body)
		return res, req.format, err
	}
	// Otherwise the SQL is the query parameter followed by the body.
	rest, err := io.ReadAll(body)
	if err != nil {
		return rawResult{}, "", fmt.Errorf("read request body: %w", err)
	}
	sql := strings.TrimSpace(strings.Join([]string{req.query, string(rest)}, "\n"))
	if sql == "" {
		return rawResult{}, "", &Exception{Code: codeSyntaxError, Message: "DB::Exception: Empty query. (SYNTAX_ERROR)"}
	}
	format := formatOf(sql, req.format)
	if isHello(sql) && strings.EqualFold(format, "Native") {
		data, err := helloAnswer(s.engine.Info(), req.clientRevision)
		return rawResult{data: data}, format, err
	}
	res, err := s.run(req, sql)
	return res, format, err
}

// insert spools the body and inserts it with INSERT ... SELECT FROM file().
func (s *Server) insert(req *request, head, format string, body io.Reader) (rawResult, error) {
	path, size, err := spoolBody(s.spoolDir, body)
	if err != nil {
		return rawResult{}, err
	}
	defer os.Remove(path)
	if size == 0 {
		return rawResult{}, nil // nothing to insert, as ClickHouse does for an empty body
	}
	return s.run(req, insertFromFile(head, format, path))
}

// run executes sql with the request's database, settings and parameters.
// The engine keeps SET values across calls while each HTTP request must
// start clean, so the settings are reset afterwards; the database is set per
// statement by runIn.
func (s *Server) run(req *request, sql string) (res rawResult, err error) {
	e := s.engine
	err = e.locked(func() error {
		if set := req.setStatement(); set != "" {
			defer s.resetSettings(req)
			if _, err := e.run(set, "", nil); err != nil {
				return err
			}
		}
		var err error
		res, err = e.runIn(req.database, sql, req.format, req.params)
		return err
	})
	return res, err
}

// resetSettings returns the request's settings to their defaults, one by one
// if together fails (an unknown name makes the whole SET fail).
func (s *Server) resetSettings(req *request) {
	if _, err := s.engine.run(req.resetStatement(), "", nil); err == nil {
		return
	}
	for _, st := range req.settings {
		if _, err := s.engine.run("SET "+st.name+" = DEFAULT", "", nil); err != nil {
			s.log.Debug("embedded ClickHouse: reset setting", slog.String("setting", st.name), slog.Any("error", err))
		}
	}
}

func (s *Server) writeResult(w http.ResponseWriter, r *http.Request, req *request, format string, res rawResult) {
	data := res.data
	h := w.Header()
	h.Set("Content-Type", contentType(format))
	h.Set("X-ClickHouse-Format", format)
	h.Set("X-ClickHouse-Timezone", s.engine.Info().Timezone)
	h.Set("X-ClickHouse-Server-Display-Name", s.engine.Info().DisplayName)
	if req.queryID != "" {
		h.Set("X-ClickHouse-Query-Id", req.queryID)
	}
	h.Set("X-ClickHouse-Summary", fmt.Sprintf(`{"read_rows":"%d","written_rows":"%d","written_bytes":"%d","elapsed_ns":"%d"}`,
		res.rowsRead, res.rowsWritten, res.bytesWritten, int64(res.elapsed*1e9)))
	var err error
	switch {
	case len(data) == 0:
	case req.compress:
		data, err = compressNative(data, req.blockMethod)
	case req.httpGzip && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip"):
		h.Set("Content-Encoding", "gzip")
		data, err = gzipBytes(data)
	}
	if err != nil {
		h.Del("Content-Encoding")
		s.writeError(w, err)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// writeError answers as ClickHouse does: a non-200 status, the code in
// X-ClickHouse-Exception-Code and "Code: N. DB::Exception: ..." as the body.
func (s *Server) writeError(w http.ResponseWriter, err error) {
	var ex *Exception
	if !errors.As(err, &ex) {
		ex = &Exception{Code: codeUnknownException, Message: "DB::Exception: " + err.Error()}
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("X-ClickHouse-Exception-Code", strconv.Itoa(ex.Code))
	w.WriteHeader(httpStatus(ex.Code))
	_, _ = io.WriteString(w, ex.Error()+"\n")
}

// requireLoopback refuses addresses other machines could reach.
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("embedded ClickHouse server: address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("embedded ClickHouse server: address %q is not loopback; the server has no authentication, so listen on 127.0.0.1 or [::1]", addr)
}
