// Package rekey chooses, for each accepted event, the partitions of the
// internal keyed topic it must reach so that several analyze members each
// see every event their per-token, per-family and per-target state needs,
// the way Kafka Streams repartitions through an internal topic. It also
// carries an event's source coordinates across that topic (record headers)
// and drops the copies that redelivery and fan-out bring to one member.
//
// The key comes from the contract (EVENTS.md), not from what a generator
// happens to send: only token_id is required on token events, family_id on
// refresh events, and target with the matching id on revokes. docs/fleet.md
// gives the rules and the cases where a field is missing.
package rekey

import (
	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/sli"
)

// Key prefixes keep the key spaces apart (a token id equal to a family id
// must not collide by accident of the emitter's hashing).
const (
	tokenKey   = "t:"
	familyKey  = "f:"
	serviceKey = "s:"
	// revokeKeyPrefix keys the partial results of a broadcast revoke.
	revokeKeyPrefix = "r:"
	// aggregatesKey keys the detectors' per-minute partial aggregates
	// (per service, kid, client: docs/fleet.md, "Aggregates").
	aggregatesKey = "a:detectors"
)

// Route is where one event goes on the keyed topic: every partition when
// Broadcast, else the partitions of Keys (one or two, deduplicated).
type Route struct {
	Broadcast bool
	Keys      []string
}

// RouteOf chooses the keys of one event:
//
//   - validate, introspect: the token (t:token_id). Every use of a token
//     meets on one member, whatever else the event names: the replay
//     detector and the revocation tracker's residual acceptances key on it.
//     Without token_id (outcome malformed): the service (s:service), where
//     nothing per token is kept.
//   - issue: the token (its owner learns the token's session, subject and
//     family for the tracker, and its client for replay), and the family
//     too when family_id is set (the refresh detector learns the family's
//     new tokens). Two keys: the event is produced once per distinct
//     partition.
//   - refresh: the family (f:family_id, required): reuse, rotation and
//     refresh rate are per family. The token a successful one issued gets
//     what the refresh says about it as a token-index record instead
//     (TokenFactsOf). Without family_id (malformed): the token, else the
//     service.
//   - revoke with target token: the token. With target session, subject or
//     family: every partition, since the tokens it covers are spread over
//     all of them and each owner knows which of its own are covered (from
//     the issue events and the ids the uses carry). Revokes are rare.
//   - key_rotate: every partition (rare; every owner's validations may
//     depend on it).
func RouteOf(e *event.Event) Route {
	switch e.Kind {
	case event.KindValidate, event.KindIntrospect:
		return Route{Keys: []string{validationKey(e.TokenID, e.Service)}}
	case event.KindIssue:
		if e.TokenID != "" {
			if e.FamilyID != "" {
				return Route{Keys: []string{tokenKey + e.TokenID, familyKey + e.FamilyID}}
			}
			return Route{Keys: []string{tokenKey + e.TokenID}}
		}
		if e.FamilyID != "" {
			return Route{Keys: []string{familyKey + e.FamilyID}}
		}
	case event.KindRefresh:
		if e.FamilyID != "" {
			return Route{Keys: []string{familyKey + e.FamilyID}}
		}
		if e.TokenID != "" {
			return Route{Keys: []string{tokenKey + e.TokenID}}
		}
	case event.KindRevoke:
		if !RevokeBroadcast(e.Target, e.TokenID) {
			return Route{Keys: []string{tokenKey + e.TokenID}}
		}
		return Route{Broadcast: true}
	case event.KindKeyRotate:
		return Route{Broadcast: true}
	}
	return Route{Keys: []string{serviceKey + e.Service}}
}

// validationKey is where a validation or introspection goes: its token, or
// without one (outcome malformed) its service.
func validationKey(token, service string) string {
	if token != "" {
		return tokenKey + token
	}
	return serviceKey + service
}

// RevokeBroadcast says whether a revoke of target naming token goes to
// every partition: all but a revoke of one named token.
func RevokeBroadcast(target, token string) bool { return target != "token" || token == "" }

// revokeKey is where the partial results of a broadcast revoke meet: its
// owner merges them (sli.RevocationMerger).
func revokeKey(id string) string { return revokeKeyPrefix + id }

// Split is what the revocation tracker of an analyze member needs to
// report broadcast revokes per keyed partition (sli.Split).
func (p *Partitioner) Split() *sli.Split {
	return &sli.Split{
		Partitions:  int32(p.n),
		PartitionOf: func(token, service string) int32 { return p.Of(validationKey(token, service)) },
		Broadcast:   RevokeBroadcast,
	}
}

// RevokeOwner is the keyed partition whose owner merges the partial
// results of the broadcast revoke with result id id.
func (p *Partitioner) RevokeOwner(id string) int32 { return p.Of(revokeKey(id)) }

// AggregatesOwner is the keyed partition whose owner merges every
// partition's partial aggregates and runs the per-service detectors on
// them.
func (p *Partitioner) AggregatesOwner() int32 { return p.Of(aggregatesKey) }

// RateOwner is the keyed partition whose owner judges the refresh rate of
// one client or subject (scope "client" or "subject").
func (p *Partitioner) RateOwner(scope, id string) int32 {
	return p.Of(aggregatesKey + ":" + scope + ":" + id)
}

// TokenFactsOf is what a successful refresh tells the revocation tracker
// of the token it issued (its session, subject and family), for the
// token's partition, which the refresh itself does not reach: the owner of
// the token's validations, which may name no session, learns it as from an
// issue event. ok is false for every other event.
func TokenFactsOf(e *event.Event) (sli.TokenFacts, bool) {
	if e.Kind != event.KindRefresh || e.Outcome != event.OK || e.TokenID == "" ||
		(e.SessionID == "" && e.Subject == "" && e.FamilyID == "") {
		return sli.TokenFacts{}, false
	}
	return sli.TokenFacts{Token: e.TokenID, Session: e.SessionID, Subject: e.Subject, Family: e.FamilyID,
		IssuedAt: e.TS, Expires: e.EXP}, true
}

// TokenPartition is the partition of a token's validations.
func (p *Partitioner) TokenPartition(token string) int32 { return p.Of(tokenKey + token) }

// Of is the partition of one key.
func (p *Partitioner) Of(key string) int32 {
	return int32(kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(key)}, p.all...))
}

// Partitioner maps keys to partitions of the keyed topic with Kafka's
// default partitioner (murmur2, as the Java client and kafka-go's
// Murmur2Balancer), so any Kafka tool agrees on where a key lives.
type Partitioner struct {
	n   int
	all []int
}

// NewPartitioner is for a keyed topic of n partitions.
func NewPartitioner(n int) *Partitioner {
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	return &Partitioner{n: n, all: all}
}

// Partitions appends the distinct partitions a route reaches to dst.
func (p *Partitioner) Partitions(r Route, dst []int32) []int32 {
	if r.Broadcast {
		for i := range p.n {
			dst = append(dst, int32(i))
		}
		return dst
	}
	for _, k := range r.Keys {
		part := p.Of(k)
		dup := false
		for _, d := range dst {
			dup = dup || d == part
		}
		if !dup {
			dst = append(dst, part)
		}
	}
	return dst
}
