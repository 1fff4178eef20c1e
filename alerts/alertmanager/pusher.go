package alertmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/finding"
)

// endsAtResends is how many resend intervals an open alert stays active in
// Alertmanager without hearing from us: Prometheus uses 4, so a pusher that
// dies resolves its alerts within minutes, while one lost push does not.
const endsAtResends = 4

// maxBatch bounds one POST body (Prometheus sends 64 alerts at a time).
const maxBatch = 64

// Push results counted in tokenwatch_alertmanager_pushes_total{result}.
const (
	resultSuccess = "success" // one POST accepted by one Alertmanager
	resultError   = "error"   // one POST refused or not answered
	resultDropped = "dropped" // a finding not taken because MaxFindings were held
)

// Pusher delivers findings to Alertmanager. Notify never blocks the
// pipeline: it records the latest state of the finding and wakes the sender,
// which retries with backoff while Alertmanager is down.
type Pusher struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client
	pushes *prometheus.CounterVec
	now    func() time.Time

	mu      sync.Mutex
	pending map[string]*tracked // by finding id: open, or closed and not yet resolved
	wake    chan struct{}

	startOnce sync.Once
	started   atomic.Bool
	cancelRun context.CancelFunc // aborts an in-flight push on Shutdown
	stop      chan struct{}
	done      chan struct{}
}

// tracked is one finding's delivery state. seq grows with every Notify;
// sentSeq is the newest state Alertmanager accepted.
type tracked struct {
	f        finding.Finding
	seq      uint64
	sentSeq  uint64
	closedAt time.Time
	// sentSeverity is the severity label Alertmanager last accepted. The
	// severity is part of the alert's identity there, so when a finding
	// changes severity the old alert is resolved explicitly rather than
	// left active until its endsAt.
	sentSeverity string
}

// New builds a Pusher and registers its metric on reg.
func New(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Pusher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pushes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenwatch_alertmanager_pushes_total",
		Help: "Pushes of findings to Alertmanager, by result: success or error per POST to one Alertmanager, dropped per finding not taken because too many were held.",
	}, []string{"result"})
	if reg != nil {
		if err := reg.Register(pushes); err != nil {
			return nil, fmt.Errorf("alertmanager: register metrics: %w", err)
		}
	}
	for _, r := range []string{resultSuccess, resultError, resultDropped} {
		pushes.WithLabelValues(r) // export zeros, so rate() and increase() see the first failure
	}
	return &Pusher{
		cfg:     cfg,
		log:     log.With("component", "alertmanager", "config", cfg),
		client:  &http.Client{Timeout: cfg.Timeout},
		pushes:  pushes,
		now:     time.Now,
		pending: map[string]*tracked{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}, nil
}

// Notify takes the latest state of a finding: opened, updated or closed.
// It never blocks; a finding beyond MaxFindings is dropped and counted.
func (p *Pusher) Notify(f finding.Finding) {
	if f.ID == "" {
		p.log.Warn("finding without id not pushed", "kind", f.Kind, "service", f.Service)
		p.pushes.WithLabelValues(resultDropped).Inc()
		return
	}
	p.mu.Lock()
	t, ok := p.pending[f.ID]
	if !ok {
		if len(p.pending) >= p.cfg.MaxFindings {
			p.mu.Unlock()
			p.pushes.WithLabelValues(resultDropped).Inc()
			p.log.Warn("too many findings held for Alertmanager; finding dropped", "finding_id", f.ID, "kind", f.Kind, "max_findings", p.cfg.MaxFindings)
			return
		}
		t = &tracked{}
		p.pending[f.ID] = t
	}
	t.f = f
	t.seq++
	if f.Status == finding.Closed {
		if t.closedAt.IsZero() {
			t.closedAt = p.now()
		}
	} else {
		t.closedAt = time.Time{} // reopened before the resolve went out
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Start runs the sender until Shutdown or until ctx is done.
func (p *Pusher) Start(ctx context.Context) error {
	p.startOnce.Do(func() {
		runCtx, cancel := context.WithCancel(ctx)
		p.cancelRun = cancel
		p.started.Store(true)
		go p.run(runCtx)
	})
	return nil
}

// Shutdown sends what has changed since the last push (a closing finding
// is resolved), bounded by ctx, and stops the sender. Open alerts are not
// resolved: a restarted tokenwatch re-sends them, and if it does not come
// back they expire on their own endsAt.
func (p *Pusher) Shutdown(ctx context.Context) error {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	if p.started.Load() {
		p.cancelRun()
		select {
		case <-p.done:
		case <-ctx.Done():
			return fmt.Errorf("alertmanager: shutdown: %w", ctx.Err())
		}
	}
	if err := p.flush(ctx, false); err != nil {
		return fmt.Errorf("alertmanager: final push: %w", err)
	}
	return nil
}

func (p *Pusher) run(ctx context.Context) {
	defer close(p.done)
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 500 * time.Millisecond
	bo.MaxInterval = p.cfg.ResendInterval
	timer := time.NewTimer(p.cfg.ResendInterval)
	defer timer.Stop()
	failing := false
	for {
		resendAll := false
		select {
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		case <-p.wake:
			if failing {
				continue // Alertmanager is down: wait for the backoff, do not hammer it
			}
		case <-timer.C:
			resendAll = true
		}
		err := p.flush(ctx, resendAll)
		switch {
		case err != nil:
			failing = true
			wait := bo.NextBackOff()
			p.log.Warn("push to Alertmanager failed; retrying", "err", err, "retry_in", wait)
			timer.Reset(wait)
		case resendAll || failing:
			if failing {
				p.log.Info("push to Alertmanager recovered")
			}
			failing = false
			bo.Reset()
			timer.Reset(p.cfg.ResendInterval)
		}
	}
}

// flush sends the collected alerts. The lock is held only around the
// bookkeeping, never across HTTP, so Notify is not held up by a slow
// Alertmanager.
func (p *Pusher) flush(ctx context.Context, all bool) error {
	p.mu.Lock()
	batch, seqs := p.collect(all)
	p.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := p.post(ctx, batch); err != nil {
		return err
	}
	p.mu.Lock()
	p.delivered(seqs)
	p.mu.Unlock()
	return nil
}

// collect picks the alerts to send: every held finding when all (the resend
// tick, or a retry), else only those changed since their last delivery.
func (p *Pusher) collect(all bool) ([]postableAlert, map[string]uint64) {
	now := p.now()
	var batch []postableAlert
	seqs := map[string]uint64{}
	for id, t := range p.pending {
		if !all && t.seq == t.sentSeq {
			continue
		}
		endsAt := now.Add(endsAtResends * p.cfg.ResendInterval)
		if !t.closedAt.IsZero() {
			endsAt = t.closedAt
		}
		a := toAlert(t.f, endsAt, p.cfg)
		batch = append(batch, a)
		if t.sentSeverity != "" && t.sentSeverity != a.Labels["severity"] {
			old := toAlert(t.f, now, p.cfg)
			old.Labels["severity"] = t.sentSeverity
			batch = append(batch, old)
		}
		seqs[id] = t.seq
	}
	return batch, seqs
}

// delivered records what Alertmanager accepted and forgets resolved
// findings; a finding updated meanwhile stays pending with its new state.
func (p *Pusher) delivered(seqs map[string]uint64) {
	for id, seq := range seqs {
		t, ok := p.pending[id]
		if !ok {
			continue
		}
		if seq > t.sentSeq {
			t.sentSeq = seq
			t.sentSeverity = severityOf(t.f)
		}
		if t.seq == t.sentSeq && !t.closedAt.IsZero() {
			delete(p.pending, id)
		}
	}
}

// post sends the alerts to every Alertmanager; it succeeds when at least one
// accepted all of them (an HA cluster gossips the rest).
func (p *Pusher) post(ctx context.Context, batch []postableAlert) error {
	var errs []error
	for _, base := range p.cfg.URLs {
		err := p.postTo(ctx, base, batch)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (p *Pusher) postTo(ctx context.Context, base string, batch []postableAlert) error {
	endpoint := strings.TrimRight(base, "/") + "/api/v2/alerts"
	for start := 0; start < len(batch); start += maxBatch {
		end := min(start+maxBatch, len(batch))
		body, err := json.Marshal(batch[start:end])
		if err != nil {
			return fmt.Errorf("alertmanager: encode alerts: %w", err)
		}
		if err := p.postOnce(ctx, endpoint, body); err != nil {
			p.pushes.WithLabelValues(resultError).Inc()
			return err
		}
		p.pushes.WithLabelValues(resultSuccess).Inc()
	}
	return nil
}

func (p *Pusher) postOnce(ctx context.Context, endpoint string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("alertmanager: request to %s: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/json")
	switch {
	case p.cfg.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+p.cfg.BearerToken)
	case p.cfg.Username != "" || p.cfg.Password != "":
		req.SetBasicAuth(p.cfg.Username, p.cfg.Password)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("alertmanager: POST %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("alertmanager: POST %s: %s: %s", endpoint, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
