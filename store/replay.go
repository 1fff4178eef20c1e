package store

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

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
