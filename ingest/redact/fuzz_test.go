package redact

import (
	"strings"
	"testing"
	"time"
)

// FuzzScrub checks that Scrub never panics, leaves no credential behind by
// the same rules, and returns clean text untouched.
func FuzzScrub(f *testing.F) {
	for _, s := range leaks {
		f.Add(s)
	}
	for _, s := range cleanValues(f)[800:] {
		f.Add(s)
	}
	g := newGuard(f)
	f.Fuzz(func(t *testing.T, s string) {
		out := g.Scrub(s)
		leaked := g.Leaks(s)
		if !leaked && out != s {
			t.Fatalf("clean text changed: %q -> %q", s, out)
		}
		if g.Leaks(out) {
			t.Fatalf("Scrub(%q) = %q still leaks", s, out)
		}
	})
}

func TestHostileValuesAreCheckedInLinearTime(t *testing.T) {
	g := newGuard(t)
	for name, v := range map[string]string{
		"a megabyte of e before two dots": strings.Repeat("e", 1<<20) + ".a.b",
		"many short dotted runs":          strings.Repeat("eyJ.", 1<<18),
		"many bearer words":               strings.Repeat("bearer ", 1<<17),
		"many basic words":                strings.Repeat("Basic QQ ", 1<<17),
	} {
		start := time.Now()
		g.Leaks(v)
		g.Scrub(v)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s: %v for %d bytes; the check is not linear", name, took, len(v))
		}
	}
}

// FuzzShape checks the eight-bytes-at-a-time pre-filter against a plain
// count: if it missed a dot or a blank, every detector behind it would miss
// the leak too.
func FuzzShape(f *testing.F) {
	f.Add("a.b.c d")
	f.Add(strings.Repeat("x", 15) + "\t" + strings.Repeat(".", 9))
	f.Fuzz(func(t *testing.T, s string) {
		dots, blank := shape(s)
		if dots != strings.Count(s, ".") || blank != strings.ContainsAny(s, " \t") {
			t.Fatalf("shape(%q) = %d, %v", s, dots, blank)
		}
	})
}
