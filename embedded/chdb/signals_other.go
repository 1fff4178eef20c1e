//go:build !linux

package chdb

// signalSnapshot is a no-op outside Linux: the fetch script and the tested
// library are Linux x86_64 only, and other systems' struct sigaction layouts
// are not handled here.
type signalSnapshot struct{}

func saveSignals() *signalSnapshot      { return &signalSnapshot{} }
func (s *signalSnapshot) restore()      {}
func (s *signalSnapshot) changed() bool { return false }
