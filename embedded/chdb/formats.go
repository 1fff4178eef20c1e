package chdb

import (
	"net/http"
	"regexp"
	"strings"
)

// ClickHouse error codes the server raises itself or maps to HTTP statuses.
const (
	codeBadArguments = 36
	codeSyntaxError  = 62
)

// trailingFormat finds a FORMAT clause ending the statement, which overrides
// default_format for the answer's Content-Type.
var trailingFormat = regexp.MustCompile(`(?is)\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$`)

// formatOf is the format the answer will be in.
func formatOf(sql, defaultFormat string) string {
	if m := trailingFormat.FindStringSubmatch(sql); m != nil {
		return m[1]
	}
	return defaultFormat
}

// contentType mirrors the Content-Type ClickHouse sends for common formats.
func contentType(format string) string {
	f := strings.ToLower(format)
	switch {
	case f == "native" || strings.HasPrefix(f, "rowbinary") || f == "parquet" || strings.HasPrefix(f, "arrow") || f == "orc":
		return "application/octet-stream"
	case strings.HasPrefix(f, "json"):
		return "application/json; charset=UTF-8"
	case strings.HasPrefix(f, "csv"):
		return "text/csv; charset=UTF-8; header=absent"
	case strings.HasPrefix(f, "tabseparated") || strings.HasPrefix(f, "tsv"):
		return "text/tab-separated-values; charset=UTF-8"
	default:
		return "text/plain; charset=UTF-8"
	}
}

// httpStatus maps an exception code to the status ClickHouse's HTTP handler
// answers with (a subset of exceptionCodeToHTTPStatus), so clients and curl
// users see 400 for a bad query and 404 for a missing table, as with a server.
func httpStatus(code int) int {
	switch code {
	case 516, 192, 193: // authentication failed, unknown user, wrong password
		return http.StatusUnauthorized
	case 164, 497: // READONLY, ACCESS_DENIED
		return http.StatusForbidden
	case 62, 53, 117, 69, 36, 456, 457: // syntax, type, data, range, argument and query-parameter errors
		return http.StatusBadRequest
	case 60, 81, 46, 47, 50, 56, 63, 73, 115: // unknown table, database, function, identifier, type, engine, aggregate, format, setting
		return http.StatusNotFound
	case 159: // TIMEOUT_EXCEEDED
		return http.StatusRequestTimeout
	default:
		return http.StatusInternalServerError
	}
}
