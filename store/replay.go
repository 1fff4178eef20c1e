package store

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// StoredEventTime is, per partition of topic, the event time its stored
// events reached: the median ts of its last 1,000 stored events by offset
// (a median, so an emitter whose clock runs ahead does not move it).
// Partitions with nothing stored are absent. The rebuild looks back from
// it, not from the wall clock, so a backfill of old events rebuilds the
// state it needs.
func (s *Store) StoredEventTime(ctx context.Context, topic string, partitions []int32) (map[int32]time.Time, error) {
	out := map[int32]time.Time{}
	if len(partitions) == 0 {
		return out, nil
	}
	parts := make([]uint16, len(partitions))
	for i, p := range partitions {
		parts[i] = uint16(p)
	}
	// The newest ts (from the p_event_time projection) bounds the scan to
	// the last two days' partitions of the table.
	var newest int64
	if err := s.conn.QueryRow(ctx, `SELECT toUnixTimestamp64Milli(max(ts)) FROM `+s.db+`.events WHERE topic = ? AND partition IN (?)`,
		topic, parts).Scan(&newest); err != nil {
		return nil, fmt.Errorf("stored event time: %w", err)
	}
	if newest <= 0 {
		return out, nil
	}
	rows, err := s.conn.Query(ctx, `SELECT partition, toUnixTimestamp64Milli(quantileExact(0.5)(ts)) FROM (
  SELECT partition, ts FROM `+s.db+`.events
  WHERE topic = ? AND partition IN (?) AND ts >= fromUnixTimestamp64Milli(?)
  ORDER BY partition, offset DESC LIMIT 1000 BY partition
) GROUP BY partition`, topic, parts, newest-int64(48*time.Hour/time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("stored event time: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var part uint16
		var ms int64
		if err := rows.Scan(&part, &ms); err != nil {
			return nil, fmt.Errorf("stored event time: %w", err)
		}
		out[int32(part)] = time.UnixMilli(ms).UTC()
	}
	return out, rows.Err()
}

// ReplayStart is where a replay of at most max events of the given
// partitions of topic from since must start: since, or the ts of the
// max-th latest event when the window holds more; and how many it holds.
func (s *Store) ReplayStart(ctx context.Context, topic string, partitions []int32, since time.Time, max int) (time.Time, int, error) {
	if len(partitions) == 0 || max <= 0 {
		return since, 0, nil
	}
	parts := make([]uint16, len(partitions))
	for i, p := range partitions {
		parts[i] = uint16(p)
	}
	var total uint64
	if err := s.conn.QueryRow(ctx, `SELECT count() FROM `+s.db+`.events WHERE topic = ? AND partition IN (?) AND ts >= fromUnixTimestamp64Milli(?)`,
		topic, parts, since.UnixMilli()).Scan(&total); err != nil {
		return since, 0, fmt.Errorf("replay start: %w", err)
	}
	if total <= uint64(max) {
		return since, int(total), nil
	}
	var ms int64
	if err := s.conn.QueryRow(ctx, `SELECT toUnixTimestamp64Milli(ts) FROM `+s.db+`.events WHERE topic = ? AND partition IN (?) AND ts >= fromUnixTimestamp64Milli(?)
ORDER BY ts DESC LIMIT 1 OFFSET ?`, topic, parts, since.UnixMilli(), uint64(max-1)).Scan(&ms); err != nil {
		return since, int(total), fmt.Errorf("replay start: %w", err)
	}
	return time.UnixMilli(ms).UTC(), int(total), nil
}

// ReplayEvents reads back, in ts order, the stored events of the given
// partitions of topic with ts >= since, and hands each to fn. The pipeline
// uses it to rebuild detector state when it takes over partitions (after a
// restart or a rebalance): the events table is the state's log.
func (s *Store) ReplayEvents(ctx context.Context, topic string, partitions []int32, since time.Time, fn func(*event.Event)) (int, error) {
	if len(partitions) == 0 {
		return 0, nil
	}
	parts := make([]uint16, len(partitions))
	for i, p := range partitions {
		parts[i] = uint16(p)
	}
	rows, err := s.conn.Query(ctx, `SELECT ts, kind, outcome, service, issuer, region, token_id, session_id, subject, client_id,
 token_type, family_id, parent_token_id, audience, expected_audience, kid, prev_kid, iat, exp, latency_ms, token_bytes,
 ip, asn, country, device, binding, binding_ok, http_status, target, reason, cache_ttl_s, request_id, trace_id, partition, offset
FROM `+s.db+`.events WHERE topic = ? AND partition IN (?) AND ts >= fromUnixTimestamp64Milli(?) ORDER BY ts, partition, offset`, topic, parts, since.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("replay events: %w", err)
	}
	defer rows.Close()
	n := 0
	var (
		kind, outcome string
		lat           float32
		tokenBytes    uint32
		ip            netip.Addr
		bindingOK     int8
		status        uint16
		part          uint16
		off           uint64
	)
	for rows.Next() {
		var e event.Event
		if err := rows.Scan(&e.TS, &kind, &outcome, &e.Service, &e.Issuer, &e.Region, &e.TokenID, &e.SessionID, &e.Subject, &e.ClientID,
			&e.TokenType, &e.FamilyID, &e.ParentTokenID, &e.Audience, &e.ExpectedAudience, &e.Kid, &e.PrevKid, &e.IAT, &e.EXP, &lat, &tokenBytes,
			&ip, &e.ASN, &e.Country, &e.Device, &e.Binding, &bindingOK, &status, &e.Target, &e.Reason, &e.CacheTTLS, &e.RequestID, &e.TraceID,
			&part, &off); err != nil {
			return n, fmt.Errorf("replay events: %w", err)
		}
		e.Kind, _ = event.ParseKind(kind)
		e.Outcome, _ = event.ParseOutcome(outcome)
		if e.IAT.UnixMilli() == 0 {
			e.IAT = time.Time{}
		}
		if e.EXP.UnixMilli() == 0 {
			e.EXP = time.Time{}
		}
		if !math.IsNaN(float64(lat)) {
			e.LatencyMS, e.HasLatency = float64(lat), true
		}
		e.TokenBytes = int32(tokenBytes)
		if ip.IsValid() && ip != netip.IPv6Unspecified() {
			e.IP = ip.Unmap()
		}
		e.BindingOK = event.Tri(bindingOK)
		e.HTTPStatus = int32(status)
		e.Src = event.Source{Topic: topic, Partition: int32(part), Offset: int64(off)}
		fn(&e)
		n++
	}
	return n, rows.Err()
}
