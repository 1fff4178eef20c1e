package chdb

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/ebitengine/purego"
)

// libchdb is a purego binding to the few symbols of libchdb.so (chDB 26.7
// C API, chdb.h) the engine uses. It is written here rather than imported
// from chdb-go because chdb-go opens the library in a package init and panics
// when it is missing, so any binary importing it could not start without a
// 566 MB library; this binding is only resolved when Open is called.
//
// Handles are opaque C pointers held as uintptr-sized unsafe.Pointers and are
// never dereferenced from Go, except the one documented in connect.
type libchdb struct {
	// chdb_connection *chdb_connect(int argc, char **argv)
	connect func(argc int32, argv **byte) unsafe.Pointer
	// void chdb_close_conn(chdb_connection *conn)
	closeConn func(conn unsafe.Pointer)
	// chdb_result *chdb_query_n(chdb_connection, const char *q, size_t, const char *fmt, size_t)
	queryN func(conn unsafe.Pointer, query *byte, queryLen uintptr, format *byte, formatLen uintptr) unsafe.Pointer
	// chdb_result *chdb_query_with_params_n(conn, q, qlen, fmt, fmtlen, names, name_lens, values, value_lens, count)
	queryWithParamsN func(conn unsafe.Pointer, query *byte, queryLen uintptr, format *byte, formatLen uintptr,
		names **byte, nameLens *uintptr, values **byte, valueLens *uintptr, count uintptr) unsafe.Pointer
	destroyResult       func(result unsafe.Pointer)
	resultBuffer        func(result unsafe.Pointer) unsafe.Pointer
	resultLength        func(result unsafe.Pointer) uintptr
	resultError         func(result unsafe.Pointer) string
	resultElapsed       func(result unsafe.Pointer) float64
	resultRowsRead      func(result unsafe.Pointer) uint64
	resultRowsWritten   func(result unsafe.Pointer) uint64
	resultBytesWritten  func(result unsafe.Pointer) uint64
	setSignalHandlersOn func(enabled int32)
	version             func() string
}

// loadLibrary dlopens path and resolves every symbol, turning purego's panic
// on a missing symbol into an error naming it (an older libchdb.so lacks the
// *_with_params_n functions).
func loadLibrary(path string) (lib *libchdb, err error) {
	handle, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("embedded ClickHouse engine: load %s: %w", path, err)
	}
	lib = &libchdb{}
	symbols := []struct {
		fn   any
		name string
	}{
		{&lib.connect, "chdb_connect"},
		{&lib.closeConn, "chdb_close_conn"},
		{&lib.queryN, "chdb_query_n"},
		{&lib.queryWithParamsN, "chdb_query_with_params_n"},
		{&lib.destroyResult, "chdb_destroy_query_result"},
		{&lib.resultBuffer, "chdb_result_buffer"},
		{&lib.resultLength, "chdb_result_length"},
		{&lib.resultError, "chdb_result_error"},
		{&lib.resultElapsed, "chdb_result_elapsed"},
		{&lib.resultRowsRead, "chdb_result_rows_read"},
		{&lib.resultRowsWritten, "chdb_result_rows_written"},
		{&lib.resultBytesWritten, "chdb_result_bytes_written"},
		{&lib.setSignalHandlersOn, "chdb_set_signal_handlers_enabled"},
		{&lib.version, "chdb_version"},
	}
	for _, s := range symbols {
		if _, err := purego.Dlsym(handle, s.name); err != nil {
			return nil, fmt.Errorf("embedded ClickHouse engine: %s lacks %s (need chDB 26.7): %w", path, s.name, err)
		}
		purego.RegisterLibFunc(s.fn, handle, s.name)
	}
	return lib, nil
}

// rawResult is what one chdb call produced, copied into Go memory.
type rawResult struct {
	data         []byte
	rowsRead     uint64
	rowsWritten  uint64
	bytesWritten uint64
	elapsed      float64
}

// query runs one statement. conn is the chdb_connection (not the pointer to
// it that chdb_connect returns). params go through chDB's server-side binding
// ({name:Type} placeholders), never into the SQL text.
func (l *libchdb) query(conn unsafe.Pointer, sql, format string, params map[string]string) (rawResult, error) {
	if sql == "" {
		return rawResult{}, fmt.Errorf("empty query")
	}
	if format == "" {
		format = "TabSeparated"
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	q := unsafe.StringData(sql)
	f := unsafe.StringData(format)
	pin.Pin(q)
	pin.Pin(f)

	var res unsafe.Pointer
	if len(params) == 0 {
		res = l.queryN(conn, q, uintptr(len(sql)), f, uintptr(len(format)))
	} else {
		names := make([]*byte, 0, len(params))
		nameLens := make([]uintptr, 0, len(params))
		values := make([]*byte, 0, len(params))
		valueLens := make([]uintptr, 0, len(params))
		for name, value := range params {
			names, nameLens = appendPinned(&pin, names, nameLens, name)
			values, valueLens = appendPinned(&pin, values, valueLens, value)
		}
		res = l.queryWithParamsN(conn, q, uintptr(len(sql)), f, uintptr(len(format)),
			&names[0], &nameLens[0], &values[0], &valueLens[0], uintptr(len(params)))
	}
	runtime.KeepAlive(sql)
	runtime.KeepAlive(format)
	if res == nil {
		// chDB documents a NULL result for statements without output.
		return rawResult{}, nil
	}
	defer l.destroyResult(res)
	if msg := l.resultError(res); msg != "" {
		return rawResult{}, parseException(msg)
	}
	out := rawResult{
		rowsRead:     l.resultRowsRead(res),
		rowsWritten:  l.resultRowsWritten(res),
		bytesWritten: l.resultBytesWritten(res),
		elapsed:      l.resultElapsed(res),
	}
	if n := l.resultLength(res); n > 0 {
		if buf := l.resultBuffer(res); buf != nil {
			out.data = append([]byte(nil), unsafe.Slice((*byte)(buf), n)...)
		}
	}
	return out, nil
}

// appendPinned appends a pointer to s's bytes (pinned for the call) and its
// length; the C side reads exactly len bytes, so no NUL is needed. An empty
// value still needs a valid pointer, hence the one-byte stand-in.
func appendPinned(pin *runtime.Pinner, ptrs []*byte, lens []uintptr, s string) ([]*byte, []uintptr) {
	p := unsafe.StringData(s)
	if len(s) == 0 {
		p = new(byte)
	}
	pin.Pin(p)
	return append(ptrs, p), append(lens, uintptr(len(s)))
}

// connectArgs builds a C argv ("clickhouse", args...) of NUL-terminated
// strings. The returned pinner keeps the memory in place until Unpin.
func connectArgs(args []string) (argv []*byte, pin *runtime.Pinner) {
	pin = new(runtime.Pinner)
	argv = make([]*byte, 0, len(args)+1)
	for _, a := range append([]string{"clickhouse"}, args...) {
		b := append([]byte(a), 0)
		pin.Pin(&b[0])
		argv = append(argv, &b[0])
	}
	return argv, pin
}
