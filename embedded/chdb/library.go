package chdb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// LibraryEnv names the environment variable that points at libchdb.so. It is
// the same variable chdb-go reads, so one setting serves both.
const LibraryEnv = "CHDB_LIB_PATH"

// CacheDirEnv names the environment variable that moves the directory where
// scripts/fetch-chdb.sh puts the library.
const CacheDirEnv = "TOKENWATCH_CHDB_DIR"

// libraryFile is the file name scripts/fetch-chdb.sh writes into the cache dir.
const libraryFile = "libchdb.so"

// FetchHint tells a user how to get the library; every "library missing"
// message carries it so nobody has to look it up.
const FetchHint = "run `make setup` (or scripts/fetch-chdb.sh) to fetch libchdb.so, or set " + LibraryEnv + " to its path"

// ErrLibraryMissing is returned by Open when libchdb.so cannot be found. Only
// the embedded store needs the library, so callers may treat this as "the
// embedded engine is unavailable" rather than as a crash.
var ErrLibraryMissing = errors.New("embedded ClickHouse engine: libchdb.so not found")

// CacheDir is where scripts/fetch-chdb.sh stores the library:
// $TOKENWATCH_CHDB_DIR, else $HOME/.cache/tokenwatch/chdb.
func CacheDir() string {
	if dir := os.Getenv(CacheDirEnv); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		// No home directory (a bare container): fall back to a path that
		// still tells the user where the script would have written it.
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "tokenwatch", "chdb")
}

// LibraryPath resolves which libchdb.so to load: the explicit path if given,
// else $CHDB_LIB_PATH, else the fetch script's cache dir. It returns the path
// and where it came from, so an error can say which setting to fix.
func LibraryPath(explicit string) (path, source string) {
	switch {
	case explicit != "":
		return explicit, "Options.LibraryPath"
	case os.Getenv(LibraryEnv) != "":
		return os.Getenv(LibraryEnv), "$" + LibraryEnv
	default:
		return filepath.Join(CacheDir(), libraryFile), "the fetch cache"
	}
}

// checkLibrary fails with ErrLibraryMissing when path is not a non-empty
// regular file. dlopen would fail too, but with a message that does not say
// how to get the library.
func checkLibrary(path, source string) error {
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w at %s (from %s): %s", ErrLibraryMissing, path, source, FetchHint)
	case err != nil:
		return fmt.Errorf("embedded ClickHouse engine: stat %s (from %s): %w", path, source, err)
	case !info.Mode().IsRegular() || info.Size() == 0:
		return fmt.Errorf("%w: %s (from %s) is empty or not a regular file: %s", ErrLibraryMissing, path, source, FetchHint)
	}
	return nil
}
