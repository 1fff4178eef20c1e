package chdb

import (
	"fmt"
	"io"
	"os"
	"regexp"
)

// spoolBody copies an insert's data into a new file in dir. The data has to
// reach the engine as a file: chDB's query call takes the statement text, and
// binary data (Native) appended after "FORMAT Native" is not safe to parse
// inline, while file(path, 'Native') reads it at full speed.
func spoolBody(dir string, body io.Reader) (path string, size int64, err error) {
	f, err := os.CreateTemp(dir, "insert-*.bin")
	if err != nil {
		return "", 0, fmt.Errorf("spool insert data: %w", err)
	}
	size, err = io.Copy(f, body)
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", 0, fmt.Errorf("spool insert data: %w", err)
	}
	return f.Name(), size, nil
}

// insertSettings matches a trailing SETTINGS clause of an INSERT head, which
// must move after the SELECT it is turned into.
var insertSettings = regexp.MustCompile(`(?is)^(.*?)\s+(SETTINGS\s+.+)$`)

// insertFromFile turns "INSERT INTO t [(cols)] [SETTINGS ...]" plus the
// body's format into "INSERT INTO t [(cols)] SELECT * FROM file(path, fmt)
// [SETTINGS ...]".
//
// The column list stays on the INSERT: file() yields the body's columns in
// the body's order, which is the order of the list (or of the table's
// insertable columns when there is no list), so SELECT * maps them by
// position. Settings on the statement (insert_deduplication_token, ...) and
// the request's SET values apply to the INSERT ... SELECT as they would to
// the INSERT ... FORMAT it replaces, so block deduplication by token still
// holds.
func insertFromFile(head, format, path string) string {
	settings := ""
	if m := insertSettings.FindStringSubmatch(head); m != nil {
		head, settings = m[1], " "+m[2]
	}
	return fmt.Sprintf("%s SELECT * FROM file(%s, %s)%s", head, quoteString(path), quoteString(format), settings)
}
