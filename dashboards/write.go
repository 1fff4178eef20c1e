package dashboards

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Files is everything deploy/grafana holds, keyed by path under it: the
// boards' JSON under dashboards/ and the provisioning files. It does no I/O.
func Files(opts Options) (map[string][]byte, error) {
	boards, err := Generate(opts)
	if err != nil {
		return nil, err
	}
	files := Provisioning(opts)
	for _, b := range boards {
		files[filepath.ToSlash(filepath.Join(DashboardsDir, b.FileName))] = b.JSON
	}
	return files, nil
}

// WriteDir writes Files(opts) under dir (deploy/grafana) and returns the
// paths it wrote, sorted.
func WriteDir(dir string, opts Options) ([]string, error) {
	files, err := Files(opts)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	written := make([]string, 0, len(names))
	for _, name := range names {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return written, fmt.Errorf("dashboards: writing %s: %w", path, err)
		}
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			return written, fmt.Errorf("dashboards: writing %s: %w", path, err)
		}
		written = append(written, path)
	}
	return written, nil
}
