package gen

import "time"

type opKind uint8

const (
	opFunc    opKind = iota // run fn (scenario scripts, rotations)
	opStart                 // a session logs in
	opRequest               // a session makes a request
	opHop                   // a request reaches its backend after the gateway
	opRefresh               // a session refreshes, if its tokens are still those of gen
)

// action is one scheduled step. Ordinary session steps use op and fields
// instead of a closure so the hot path does not allocate one per event.
type action struct {
	at    time.Time
	seq   uint64
	op    opKind
	s     *session
	a     *actor // who presents tok (opHop)
	tok   token  // the token a hop presents
	svc   *service
	gen   int
	req   string
	trace string
	fn    func()
}

// queue is a binary min-heap of actions by (at, seq). It is written out
// rather than built on container/heap because that boxes every pushed value
// in an interface, an allocation per event on the hot path; seq keeps
// actions at the same instant in the order they were scheduled, which makes
// runs deterministic.
type queue struct {
	items []action
	seq   uint64
}

func (q *queue) len() int { return len(q.items) }

func (q *queue) peek() *action { return &q.items[0] }

func (q *queue) less(i, j int) bool {
	a, b := &q.items[i], &q.items[j]
	if !a.at.Equal(b.at) {
		return a.at.Before(b.at)
	}
	return a.seq < b.seq
}

func (q *queue) push(a action) {
	q.seq++
	a.seq = q.seq
	a.at = a.at.Truncate(time.Millisecond)
	q.items = append(q.items, a)
	i := len(q.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q.items[i], q.items[p] = q.items[p], q.items[i]
		i = p
	}
}

func (q *queue) pop() action {
	top := q.items[0]
	last := len(q.items) - 1
	q.items[0] = q.items[last]
	q.items[last] = action{}
	q.items = q.items[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(q.items) && q.less(l, m) {
			m = l
		}
		if r < len(q.items) && q.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		q.items[i], q.items[m] = q.items[m], q.items[i]
		i = m
	}
	return top
}
