package chdb_test

import (
	"os"
	"testing"

	"github.com/tokenwatch/tokenwatch/embedded/chdb"
)

// goSignals are the Go runtime's signal handlers before any engine booted.
var goSignals *chdb.SignalSnapshot

func TestMain(m *testing.M) {
	goSignals = chdb.SaveSignals()
	os.Exit(m.Run())
}
