package analyze

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
)

// gzipMagic opens every gzip stream (RFC 1952), so a compressed file is
// recognised by its content whatever its name.
var gzipMagic = []byte{0x1f, 0x8b}

// openInput returns the decompressed content of r: gzip when it starts with
// gzip's magic bytes, r itself otherwise.
func openInput(r io.Reader) (*bufio.Reader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, err := br.Peek(len(gzipMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read input: %w", err)
	}
	if !bytes.Equal(head, gzipMagic) {
		return br, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("open gzip input: %w", err)
	}
	return bufio.NewReaderSize(zr, 1<<20), nil
}

// lineReader reads lines of any length up to max; a longer line is skipped
// to its end and reported, so one bad line never stops a run.
type lineReader struct {
	r    *bufio.Reader
	max  int
	buf  []byte
	line int64
}

// next returns the next line without its newline, its 1-based number, and
// whether it was longer than max (then line is empty). io.EOF ends the input.
func (l *lineReader) next() (line []byte, number int64, tooLong bool, err error) {
	l.buf = l.buf[:0]
	for {
		chunk, err := l.r.ReadSlice('\n')
		if !tooLong {
			if len(l.buf)+len(chunk) > l.max+1 { // +1: the newline itself
				tooLong = true
				l.buf = l.buf[:0]
			} else {
				l.buf = append(l.buf, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(l.buf) == 0 && !tooLong && len(chunk) == 0 {
				return nil, l.line, false, io.EOF
			}
		case err != nil:
			return nil, l.line, false, fmt.Errorf("read line %d: %w", l.line+1, err)
		}
		l.line++
		return bytes.TrimRight(l.buf, "\r\n"), l.line, tooLong, nil
	}
}

// countingReader counts the bytes read through it, for the progress bar.
type countingReader struct {
	r io.Reader
	n int64
	p *progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.p != nil {
		c.p.update(c.n)
	}
	return n, err
}

// progress draws a one-line bar of bytes read against the input's size (or
// just bytes read when the size is unknown). It redraws only when the shown
// figure changes, so a large file does not flood a slow terminal.
type progress struct {
	w     io.Writer
	total int64
	shown int64 // last percent (or MiB, when total is unknown) drawn; -1 = none
}

func newProgress(w io.Writer, total int64) *progress {
	return &progress{w: w, total: total, shown: -1}
}

func (p *progress) update(n int64) {
	const width = 40
	if p.total > 0 {
		pct := min(n*100/p.total, 100)
		if pct == p.shown {
			return
		}
		p.shown = pct
		filled := int(pct * width / 100)
		fmt.Fprintf(p.w, "\r[%s%s] %3d%% %s / %s", bytes.Repeat([]byte("#"), filled),
			bytes.Repeat([]byte("."), width-filled), pct, mib(n), mib(p.total))
		return
	}
	if m := n >> 20; m != p.shown {
		p.shown = m
		fmt.Fprintf(p.w, "\r%s read", mib(n))
	}
}

func (p *progress) done() {
	if p.shown >= 0 {
		fmt.Fprintln(p.w)
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// bufioOf returns r as a *bufio.Reader, wrapping it only when it is not one.
func bufioOf(r io.Reader) *bufio.Reader {
	if br, ok := r.(*bufio.Reader); ok {
		return br
	}
	return bufio.NewReaderSize(r, 1<<20)
}
