package aggregate

import (
	"testing"
	"time"
)

func part(src int32, minute int64, seq uint64, body int) Partial[int] {
	return Partial[int]{Source: src, Slice: minute, Seq: seq, Body: body}
}

func sum(c Closed[int]) int {
	n := 0
	for _, p := range c.Parts {
		n += p.Body
	}
	return n
}

func TestAMinuteClosesWhenEverySourceReportedItInMinuteOrder(t *testing.T) {
	c := NewCloser[int](3, time.Minute, 60)
	t0 := time.Unix(0, 0)
	c.Add(part(0, 10, 5, 5), t0)
	c.Add(part(1, 10, 2, 2), t0)
	c.Add(part(0, 11, 1, 1), t0)
	c.Add(part(1, 11, 0, 0), t0) // an empty partial: nothing to say, but reported
	if got := c.Ready(t0); len(got) != 0 {
		t.Fatalf("source 2 has reported nothing: nothing may close, got %d minutes", len(got))
	}
	// A source's partials arrive in minute order (one member sends them,
	// in order, to one partition): 10 closes with source 2's partial of 10,
	// and 11 waits for its partial of 11.
	c.Add(part(2, 10, 3, 3), t0)
	ten := c.Ready(t0)
	if len(ten) != 1 || ten[0].Slice != 10 || sum(ten[0]) != 10 || ten[0].Missing != 0 {
		t.Fatalf("want minute 10 alone, summing 5+2+3 with no source missing, got %+v", ten)
	}
	c.Add(part(2, 11, 4, 4), t0)
	eleven := c.Ready(t0)
	if len(eleven) != 1 || eleven[0].Slice != 11 || sum(eleven[0]) != 5 {
		t.Fatalf("want minute 11 summing 1+0+4, got %+v", eleven)
	}
}

func TestACopyOfAPartialChangesNothingAndALateOneIsCounted(t *testing.T) {
	c := NewCloser[int](2, time.Minute, 60)
	t0 := time.Unix(0, 0)
	if o := c.Add(part(0, 10, 5, 5), t0); o != Merged {
		t.Fatalf("first partial: %v", o)
	}
	if o := c.Add(part(0, 10, 5, 5), t0); o != Duplicate {
		t.Errorf("the same partial again (redelivered): %v, want Duplicate", o)
	}
	if o := c.Add(part(0, 10, 3, 3), t0); o != Duplicate {
		t.Errorf("a partial folded from fewer events (a rebuild that started mid-minute): %v, want Duplicate", o)
	}
	if o := c.Add(part(0, 10, 7, 7), t0); o != Merged {
		t.Errorf("a fuller partial of an open minute: %v, want Merged (replacing the other)", o)
	}
	c.Add(part(1, 10, 1, 1), t0)
	got := c.Ready(t0)
	if len(got) != 1 || sum(got[0]) != 8 {
		t.Fatalf("minute 10 = %+v, want one minute summing 7+1", got)
	}
	if o := c.Add(part(1, 10, 1, 1), t0); o != Duplicate {
		t.Errorf("a copy of a closed minute's partial (read again after a rebuild): %v, want Duplicate", o)
	}
	if o := c.Add(part(1, 10, 2, 2), t0); o != Late {
		t.Errorf("a fuller partial after its minute closed: %v, want Late", o)
	}
	if o := c.Add(part(1, 9, 2, 2), t0); o != Late {
		t.Errorf("a partial of a minute before the closed ones: %v, want Late", o)
	}
	if c.Duplicates != 3 || c.LateParts != 2 {
		t.Errorf("Duplicates=%d LateParts=%d, want 3 and 2", c.Duplicates, c.LateParts)
	}
}

func TestAMinuteMissingASourceClosesAfterTheWait(t *testing.T) {
	c := NewCloser[int](2, time.Minute, 60)
	t0 := time.Unix(0, 0)
	c.Add(part(0, 10, 1, 1), t0)
	if got := c.Ready(t0.Add(59 * time.Second)); len(got) != 0 {
		t.Fatalf("closed before the wait: %+v", got)
	}
	got := c.Ready(t0.Add(time.Minute))
	if len(got) != 1 || got[0].Missing != 1 || c.Incomplete != 1 {
		t.Fatalf("want minute 10 closed with 1 source missing, got %+v (incomplete %d)", got, c.Incomplete)
	}
}

func TestAMinuteOfReplayedPartialsClosesReplayed(t *testing.T) {
	c := NewCloser[int](2, time.Minute, 60)
	t0 := time.Unix(0, 0)
	a, b := part(0, 10, 1, 1), part(1, 10, 1, 1)
	a.Replayed, b.Replayed = true, true
	c.Add(a, t0)
	c.Add(b, t0)
	c.Add(part(0, 11, 1, 1), t0)
	b11 := part(1, 11, 1, 1)
	b11.Replayed = true
	c.Add(b11, t0)
	got := c.Ready(t0)
	if len(got) != 2 || !got[0].Replayed || got[1].Replayed {
		t.Fatalf("want minute 10 replayed and 11 (one live partial) not, got %+v", got)
	}
}
