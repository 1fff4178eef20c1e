package chdb

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ClickHouse/ch-go/compress"
	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// decodeBody undoes the request's compression: an HTTP Content-Encoding
// (gzip, deflate, br, zstd) and/or ClickHouse's own block compression
// (decompress=1, LZ4 or ZSTD blocks with checksums).
func decodeBody(body io.Reader, contentEncoding string, nativeCompressed bool) (io.Reader, func(), error) {
	closers := []func(){}
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	r := body
	switch enc := strings.ToLower(strings.TrimSpace(contentEncoding)); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		gz, err := gzip.NewReader(r)
		if err != nil {
			return nil, closeAll, fmt.Errorf("gzip request body: %w", err)
		}
		closers = append(closers, func() { _ = gz.Close() })
		r = gz
	case "deflate":
		zr, err := zlib.NewReader(r)
		if err != nil {
			return nil, closeAll, fmt.Errorf("deflate request body: %w", err)
		}
		closers = append(closers, func() { _ = zr.Close() })
		r = zr
	case "br":
		r = brotli.NewReader(r)
	case "zstd":
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, closeAll, fmt.Errorf("zstd request body: %w", err)
		}
		closers = append(closers, zr.Close)
		r = zr
	default:
		return nil, closeAll, fmt.Errorf("unsupported Content-Encoding %q", contentEncoding)
	}
	if nativeCompressed {
		r = eofShield{compress.NewReader(r)}
	}
	return r, closeAll, nil
}

// eofShield turns ch-go's wrapped end-of-stream error back into a bare
// io.EOF. compress.Reader reports the end of its input as "read next block:
// header: EOF", which io.ReadAll and io.Copy would take for a failure.
type eofShield struct{ r io.Reader }

func (s eofShield) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && errors.Is(err, io.EOF) {
		return n, io.EOF
	}
	return n, err
}

// nativeBlockSize caps each compressed block of a response, the same 1 MiB
// ClickHouse uses by default (max_compress_block_size).
const nativeBlockSize = 1 << 20

// compressNative frames data as ClickHouse compressed blocks (compress=1),
// with the method named by network_compression_method (LZ4 by default).
func compressNative(data []byte, method string) ([]byte, error) {
	m := compress.LZ4
	switch strings.ToUpper(method) {
	case "", "LZ4":
	case "ZSTD":
		m = compress.ZSTD
	case "NONE":
		m = compress.None
	default:
		return nil, fmt.Errorf("unsupported network_compression_method %q", method)
	}
	w := compress.NewWriter(compress.LevelZero, m)
	var out bytes.Buffer
	for len(data) > 0 {
		n := min(len(data), nativeBlockSize)
		if err := w.Compress(data[:n]); err != nil {
			return nil, fmt.Errorf("compress response block: %w", err)
		}
		out.Write(w.Data)
		data = data[n:]
	}
	return out.Bytes(), nil
}

// gzipBytes compresses a response for a client that accepts gzip.
func gzipBytes(data []byte) ([]byte, error) {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	if _, err := w.Write(data); err != nil {
		return nil, fmt.Errorf("gzip response: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("gzip response: %w", err)
	}
	return out.Bytes(), nil
}
