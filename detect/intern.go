package detect

import "strings"

// interner maps the few distinct service names to small integers so state can
// name a service in two bytes. Past its cap every new name becomes "other",
// which also bounds the service label of tokenwatch_findings_total.
type interner struct {
	ids   map[string]uint16
	names []string
	cap   int
}

const otherName = "other"

func newInterner(capacity int) *interner {
	// Index 0 is the empty name, index 1 is "other".
	return &interner{ids: map[string]uint16{"": 0, otherName: 1}, names: []string{"", otherName}, cap: capacity + 2}
}

func (n *interner) id(s string) uint16 {
	if id, ok := n.ids[s]; ok {
		return id
	}
	if len(n.names) >= n.cap {
		return 1
	}
	s = strings.Clone(s) // the event's string may sit in a reused buffer
	id := uint16(len(n.names))
	n.ids[s] = id
	n.names = append(n.names, s)
	return id
}

func (n *interner) name(id uint16) string {
	if int(id) < len(n.names) {
		return n.names[id]
	}
	return otherName
}

// label returns s if it is a tracked name, else "other": metric labels stay bounded.
func (n *interner) label(s string) string {
	if id, ok := n.ids[s]; ok {
		return n.names[id]
	}
	return otherName
}
