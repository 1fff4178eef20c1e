package chdb

// Exported for the external tests, which cannot reach unexported names.

// SignalSnapshot records every standard signal's handler.
type SignalSnapshot = signalSnapshot

// SaveSignals is saveSignals.
var SaveSignals = saveSignals

// Changed reports whether any handler differs from the snapshot.
func (s *signalSnapshot) Changed() bool { return s.changed() }
