package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// reloader loads the configuration at start, and again when its files
// change (polled every interval: a digest of the files' names and
// contents, so that editors' renames and Kubernetes' symlink swaps are
// seen alike) or on SIGHUP. A configuration that fails to load is refused:
// the one in force stays, and the failure is logged and counted
// (ratelimitd_config_reloads_total{result="failure"},
// ratelimitd_config_last_reload_successful 0).
type reloader struct {
	svc     *Service
	path    string // "": the embedded sample, never reloaded
	logger  *slog.Logger
	metrics *serviceMetrics

	mu      sync.Mutex // serialises loads (the poller and SIGHUP)
	current string     // digest in force
	refused string     // digest last refused: logged once, not at every poll

	quit chan struct{}
	done chan struct{}
}

func newReloader(svc *Service, path string, logger *slog.Logger, m *serviceMetrics) *reloader {
	return &reloader{svc: svc, path: path, logger: logger, metrics: m}
}

func (r *reloader) describe() string {
	if r.path == "" {
		return "the embedded sample (-config to use your own)"
	}
	return r.path
}

// initial loads the configuration the service starts with; an error stops
// the start.
func (r *reloader) initial() error {
	if r.path == "" {
		d, errs := parseFile("embedded:config/example.yaml", exampleConfig)
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		cfg := &Config{Domains: map[string]*Domain{d.Name: d}, Digest: "embedded"}
		return r.apply(cfg)
	}
	cfg, err := LoadConfig(r.path)
	if err != nil {
		r.metrics.reloaded(false, 0)
		return fmt.Errorf("configuration: %w", err)
	}
	return r.apply(cfg)
}

func (r *reloader) apply(cfg *Config) error {
	if err := r.svc.Apply(cfg); err != nil {
		r.metrics.reloaded(false, 0)
		return err
	}
	r.current = cfg.Digest
	r.metrics.reloaded(true, len(cfg.Domains))
	return nil
}

// start runs the poller and the SIGHUP handler until stop.
func (r *reloader) start(interval time.Duration, hup <-chan os.Signal) {
	r.quit, r.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(r.done)
		var tick <-chan time.Time
		if interval > 0 && r.path != "" {
			t := time.NewTicker(interval)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-r.quit:
				return
			case <-tick:
				r.reload(false)
			case <-hup:
				r.reload(true)
			}
		}
	}()
}

func (r *reloader) stop() {
	if r.quit != nil {
		close(r.quit)
		<-r.done
		r.quit = nil
	}
}

// reload loads the configuration again if its files changed, or always
// when forced (SIGHUP), and applies it if it is valid.
func (r *reloader) reload(forced bool) {
	if r.path == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	digest, err := filesDigest(r.path)
	if err != nil {
		digest = "error: " + err.Error()
	}
	if !forced && (digest == r.current || digest == r.refused) {
		return
	}
	cfg, err := LoadConfig(r.path)
	if err == nil {
		err = r.svc.Apply(cfg)
	}
	if err != nil {
		r.refused = digest
		r.metrics.reloaded(false, 0)
		r.logger.Error("configuration refused; the one in force stays", "path", r.path, "error", err.Error())
		return
	}
	r.current, r.refused = cfg.Digest, ""
	r.metrics.reloaded(true, len(cfg.Domains))
	r.logger.Info("configuration loaded", "path", r.path, "domains", len(cfg.Domains), "files", len(cfg.Files))
}

// filesDigest is LoadConfig's Digest of path, without parsing.
func filesDigest(path string) (string, error) {
	files, err := configFiles(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
