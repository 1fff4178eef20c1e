package chdb

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Exception is an error raised by the ClickHouse engine, with the numeric
// code ClickHouse clients branch on (60 unknown table, 62 syntax error, ...).
type Exception struct {
	Code    int
	Message string // the text after "Code: N. ", e.g. "DB::Exception: Unknown table ..."
}

func (e *Exception) Error() string {
	return fmt.Sprintf("Code: %d. %s", e.Code, e.Message)
}

// codeUnknownException is ClickHouse's STD_EXCEPTION, used when the engine's
// message carries no code of its own.
const codeUnknownException = 1001

var exceptionCodePrefix = regexp.MustCompile(`^Code:\s*(\d+)\.\s*`)

// parseException turns chDB's error text ("Code: 60. DB::Exception: ...")
// into an Exception, keeping the whole text when there is no code.
func parseException(text string) *Exception {
	text = strings.TrimSpace(text)
	if m := exceptionCodePrefix.FindStringSubmatch(text); m != nil {
		if code, err := strconv.Atoi(m[1]); err == nil && code > 0 {
			return &Exception{Code: code, Message: text[len(m[0]):]}
		}
	}
	if !strings.Contains(text, "Exception") {
		text = "DB::Exception: " + text
	}
	return &Exception{Code: codeUnknownException, Message: text}
}
