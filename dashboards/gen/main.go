// Command gen writes the Grafana dashboards of ratelimit-go, built with
// Grafana's own dashboards-as-code library (grafana-foundation-sdk), and a
// layout diagram of each, into the dashboards directory:
//
//	cd dashboards/gen && go run .   # or: go generate ./dashboards (from the repository root)
//
// It is a module of its own so that the library's go.mod, which users
// import, does not grow the SDK. Its tests check that the committed files
// are what it writes now, and that the SDK's strict parse and validation
// accept them.
package main

//go:generate go run .

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

func main() {
	dir := flag.String("dir", "..", "the dashboards directory to write into")
	flag.Parse()
	written, err := write(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	for _, f := range written {
		fmt.Println("wrote", f)
	}
}

// write generates every file into dir and returns their paths.
func write(dir string) ([]string, error) {
	// The alert rules live beside the dashboards: their absence means dir
	// is not the dashboards directory (go run from elsewhere).
	if _, err := os.Stat(filepath.Join(dir, "alerts.yml")); err != nil {
		return nil, fmt.Errorf("%s is not the dashboards directory (run from dashboards/gen, or pass -dir): %w", dir, err)
	}
	files, err := generate()
	if err != nil {
		return nil, err
	}
	var written []string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			return written, err
		}
		written = append(written, path)
	}
	return written, nil
}
