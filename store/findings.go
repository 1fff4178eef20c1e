package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tokenwatch/tokenwatch/finding"
)

// InsertFindings stores the newest state of each finding. The table is a
// ReplacingMergeTree on version, so readers use FINAL (or argMax) to see one
// row per finding; versions come from the wall clock at insert so a state
// rebuilt after a restart still supersedes what was stored before.
func (s *Store) InsertFindings(ctx context.Context, fs []finding.Finding) error {
	if len(fs) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(s.distributedInsert(ctx), "INSERT INTO "+s.db+`.findings (id, kind, severity, status, key, service, issuer, region,
 token_id, session_id, family_id, subject, client_id, kid, first_seen, last_seen, detected_at, closed_at, count, evidence, action, version)`)
	if err != nil {
		return fmt.Errorf("insert findings: prepare: %w", err)
	}
	base := uint64(time.Now().UnixNano())
	for i, f := range fs {
		ev, err := json.Marshal(f.Evidence)
		if err != nil {
			ev = []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
		}
		if err := b.Append(f.ID, string(f.Kind), string(f.Severity), string(f.Status), f.Key, f.Service, f.Issuer, f.Region,
			f.TokenID, f.SessionID, f.FamilyID, f.Subject, f.ClientID, f.Kid,
			f.FirstSeen, f.LastSeen, f.DetectedAt, f.ClosedAt, uint64(f.Count), string(ev), f.Action, base+uint64(i)); err != nil {
			_ = b.Abort()
			return fmt.Errorf("insert findings: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert findings (%d): %w", len(fs), err)
	}
	return nil
}

// Revocation is one (revoke, service) result of revocation propagation (M4).
type Revocation struct {
	RevokedAt           time.Time
	RevokeService       string
	Target              string
	TargetID            string
	TokenID             string
	SessionID           string
	Subject             string
	FamilyID            string
	Service             string // empty on the row of the revoke as a whole
	ResidualAcceptances uint32
	LagS                float64
	FirstRejectionS     float64
	Propagated          bool
	PropagationS        float64
	RevokePropagated    bool
	// Truncated: reported before its horizon had passed (at shutdown), with
	// what was known then; a later result for the same revoke replaces it.
	Truncated bool
}

// InsertRevocations stores propagation results.
func (s *Store) InsertRevocations(ctx context.Context, rs []Revocation) error {
	if len(rs) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(s.distributedInsert(ctx), "INSERT INTO "+s.db+`.revocations (revoked_at, revoke_service, target, target_id, token_id,
 session_id, subject, family_id, service, residual_acceptances, lag_s, first_rejection_s, propagated, propagation_s, revoke_propagated, truncated)`)
	if err != nil {
		return fmt.Errorf("insert revocations: prepare: %w", err)
	}
	for _, r := range rs {
		if err := b.Append(r.RevokedAt, r.RevokeService, r.Target, r.TargetID, r.TokenID, r.SessionID, r.Subject, r.FamilyID,
			r.Service, r.ResidualAcceptances, r.LagS, r.FirstRejectionS, r.Propagated, r.PropagationS, r.RevokePropagated, r.Truncated); err != nil {
			_ = b.Abort()
			return fmt.Errorf("insert revocations: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert revocations (%d): %w", len(rs), err)
	}
	return nil
}

// distributedInsert: on a cluster, findings and revocations are written
// through their Distributed tables, whose sharding key keeps every version
// of a finding (every row of a revoke) on one shard for FINAL; with
// distributed_foreground_insert the INSERT returns only once each shard has
// its rows, so offsets are committed after ClickHouse has them. A retried
// batch of these ReplacingMergeTree tables replaces itself.
func (s *Store) distributedInsert(ctx context.Context) context.Context {
	if s.cluster == "" {
		return ctx
	}
	return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"distributed_foreground_insert": 1}))
}
