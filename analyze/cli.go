package analyze

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// OpenInput opens the --input argument: "-" is stdin, anything else a file.
// size is the file's size for the progress bar, 0 when unknown (stdin, a
// pipe). The caller closes r.
func OpenInput(path string, stdin io.Reader) (r io.ReadCloser, size int64, err error) {
	if path == "-" {
		return io.NopCloser(stdin), 0, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("open input: %w", err)
	}
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	return f, size, nil
}

// ProgressTo returns w when it is a terminal, nil otherwise, so a progress
// bar is drawn for a person and never written into a log or a pipe.
func ProgressTo(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return f
	}
	return nil
}
