package ingest

import "unsafe"

// interner hands out one shared string per distinct low-cardinality value
// (service, issuer, kid, country, ...), so decoding them allocates only the
// first time each is seen. It is bounded: once full, or for long values, it
// allocates like plain string(b) rather than grow without limit under a
// producer that puts ids in a label field.
type interner struct {
	m map[string]string
}

const (
	internMaxEntries = 16384
	internMaxLen     = 128
)

func newInterner() interner { return interner{m: make(map[string]string, 256)} }

func (in *interner) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := in.m[string(b)]; ok { // the compiler does not allocate for this lookup
		return s
	}
	s := string(b)
	if len(b) <= internMaxLen && len(in.m) < internMaxEntries {
		in.m[s] = s
	}
	return s
}

// unsafeString views b as a string without copying, for passing to parsers
// (time.Parse, netip.ParseAddr, strconv.ParseFloat) that do not keep their
// input once they succeed. Their errors do keep it, so callers discard
// errors from them and b must not be modified while the string is in use.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
