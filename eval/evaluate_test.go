package eval

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/finding"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func kindRow(t *testing.T, r Result, k finding.Kind) KindResult {
	t.Helper()
	for _, row := range r.Kinds {
		if row.Kind == k {
			return row
		}
	}
	t.Fatalf("no row for kind %s", k)
	return KindResult{}
}

func TestEvaluateCounts(t *testing.T) {
	replayAttack := Truth{Kind: finding.Replay, Scenario: "replay", Attack: true, TokenID: "tokA", SessionID: "sessA", Start: at(100)}
	replayAttack2 := Truth{Kind: finding.Replay, Scenario: "replay", Attack: true, TokenID: "tokB", SessionID: "sessB", Start: at(200)}
	natLookAlike := Truth{Kind: finding.Replay, Scenario: "nat_egress", TokenID: "tokN", SessionID: "sessN", Start: at(50)}
	reuse := Truth{Kind: finding.RefreshReuse, Scenario: "refresh_reuse_idp", Attack: true, FamilyID: "famR", Start: at(300)}
	race := Truth{Kind: finding.RefreshReuse, Scenario: "refresh_race", FamilyID: "famRace", Start: at(310)}
	clientRate := Truth{Kind: finding.RefreshAnomaly, Scenario: "refresh_rate_client", Attack: true, ClientID: "web-1", Start: at(400)}
	familyRate := Truth{Kind: finding.RefreshAnomaly, Scenario: "refresh_rate_family", Attack: true, FamilyID: "famF", ClientID: "web-2", Start: at(400)}
	busy := Truth{Kind: finding.RefreshAnomaly, Scenario: "busy_client", ClientID: "web-busy", Start: at(0)}
	rotBreak := Truth{Kind: finding.KeyRotationBreak, Scenario: "key_rotation_break", Attack: true, Kid: "k2", Service: "orders", Start: at(500)}
	rotOK := Truth{Kind: finding.KeyRotationBreak, Scenario: "key_rotation_handled", Kid: "k3", Start: at(600)}
	skew := Truth{Kind: finding.ClockSkew, Scenario: "clock_skew", Attack: true, Service: "search", Start: at(700)}

	tests := []struct {
		name     string
		truth    []Truth
		findings []finding.Finding
		kind     finding.Kind
		want     KindResult // only the counts are compared
	}{
		{
			name:     "a replay found by token id is a true positive",
			truth:    []Truth{replayAttack},
			findings: []finding.Finding{{ID: "f1", Kind: finding.Replay, TokenID: "tokA", FirstSeen: at(130)}},
			kind:     finding.Replay,
			want:     KindResult{Attacks: 1, Findings: 1, TruePositives: 1},
		},
		{
			name:     "a replay found by session id alone is a true positive",
			truth:    []Truth{replayAttack},
			findings: []finding.Finding{{ID: "f1", Kind: finding.Replay, SessionID: "sessA", FirstSeen: at(130)}},
			kind:     finding.Replay,
			want:     KindResult{Attacks: 1, Findings: 1, TruePositives: 1},
		},
		{
			name:  "a second finding for the same replay is a duplicate false positive",
			truth: []Truth{replayAttack},
			findings: []finding.Finding{
				{ID: "f2", Kind: finding.Replay, TokenID: "tokA", DetectedAt: at(190)},
				{ID: "f1", Kind: finding.Replay, TokenID: "tokA", DetectedAt: at(130)},
			},
			kind: finding.Replay,
			want: KindResult{Attacks: 1, Findings: 2, TruePositives: 1, FalsePositives: 1, Duplicates: 1},
		},
		{
			name:     "a replay finding on a NAT look-alike is a false positive and the missed attack a false negative",
			truth:    []Truth{replayAttack, natLookAlike},
			findings: []finding.Finding{{ID: "f1", Kind: finding.Replay, TokenID: "tokN", FirstSeen: at(60)}},
			kind:     finding.Replay,
			want:     KindResult{Attacks: 1, LookAlikes: 1, Findings: 1, FalsePositives: 1, LookAlikeHits: 1, FalseNegatives: 1},
		},
		{
			name:     "a finding of the wrong kind for the token does not count as a detection",
			truth:    []Truth{replayAttack},
			findings: []finding.Finding{{ID: "f1", Kind: finding.SlowRevocation, TokenID: "tokA", FirstSeen: at(130)}},
			kind:     finding.Replay,
			want:     KindResult{Attacks: 1, FalseNegatives: 1},
		},
		{
			name:  "a finding naming nothing injected is an unmatched false positive",
			truth: []Truth{replayAttack, replayAttack2},
			findings: []finding.Finding{
				{ID: "f1", Kind: finding.Replay, TokenID: "tokA", FirstSeen: at(130)},
				{ID: "f2", Kind: finding.Replay, TokenID: "tokZ", FirstSeen: at(140)},
			},
			kind: finding.Replay,
			want: KindResult{Attacks: 2, Findings: 2, TruePositives: 1, FalsePositives: 1, Unmatched: 1, FalseNegatives: 1},
		},
		{
			name:  "reuse is matched by family and a refresh race flagged as theft is a false positive",
			truth: []Truth{reuse, race},
			findings: []finding.Finding{
				{ID: "f1", Kind: finding.RefreshReuse, FamilyID: "famR", FirstSeen: at(300)},
				{ID: "f2", Kind: finding.RefreshReuse, FamilyID: "famRace", FirstSeen: at(311)},
			},
			kind: finding.RefreshReuse,
			want: KindResult{Attacks: 1, LookAlikes: 1, Findings: 2, TruePositives: 1, FalsePositives: 1, LookAlikeHits: 1},
		},
		{
			name:  "a client rate anomaly is matched by client id, a busy client flagged is a false positive",
			truth: []Truth{clientRate, familyRate, busy},
			findings: []finding.Finding{
				{ID: "f1", Kind: finding.RefreshAnomaly, ClientID: "web-1", FirstSeen: at(460)},
				{ID: "f2", Kind: finding.RefreshAnomaly, ClientID: "web-busy", FirstSeen: at(470)},
			},
			kind: finding.RefreshAnomaly,
			want: KindResult{Attacks: 2, LookAlikes: 1, Findings: 2, TruePositives: 1, FalsePositives: 1, LookAlikeHits: 1, FalseNegatives: 1},
		},
		{
			name:     "a family rate anomaly is not found by a finding that only shares its client",
			truth:    []Truth{familyRate},
			findings: []finding.Finding{{ID: "f1", Kind: finding.RefreshAnomaly, ClientID: "web-2", FirstSeen: at(460)}},
			kind:     finding.RefreshAnomaly,
			want:     KindResult{Attacks: 1, Findings: 1, FalsePositives: 1, Unmatched: 1, FalseNegatives: 1},
		},
		{
			name:  "a rotation break is matched by kid or by service; a handled rotation flagged is a false positive",
			truth: []Truth{rotBreak, rotOK},
			findings: []finding.Finding{
				{ID: "f1", Kind: finding.KeyRotationBreak, Service: "orders", FirstSeen: at(520)},
				{ID: "f2", Kind: finding.KeyRotationBreak, Kid: "k3", FirstSeen: at(610)},
			},
			kind: finding.KeyRotationBreak,
			want: KindResult{Attacks: 1, LookAlikes: 1, Findings: 2, TruePositives: 1, FalsePositives: 1, LookAlikeHits: 1},
		},
		{
			name:     "clock skew is matched by service",
			truth:    []Truth{skew},
			findings: []finding.Finding{{ID: "f1", Kind: finding.ClockSkew, Service: "search", FirstSeen: at(760)}},
			kind:     finding.ClockSkew,
			want:     KindResult{Attacks: 1, Findings: 1, TruePositives: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := kindRow(t, Evaluate(tc.truth, tc.findings), tc.kind)
			got.Kind, got.Precision, got.Recall, got.Latency = "", 0, 0, Latency{}
			if got != tc.want {
				t.Errorf("counts:\n got  %+v\n want %+v", got, tc.want)
			}
		})
	}
}

func TestEvaluateRatiosAndLatency(t *testing.T) {
	truth := []Truth{
		{Kind: finding.Replay, Attack: true, TokenID: "a", Start: at(0)},
		{Kind: finding.Replay, Attack: true, TokenID: "b", Start: at(0)},
		{Kind: finding.Replay, Attack: true, TokenID: "c", Start: at(0)},
		{Kind: finding.Replay, Attack: true, TokenID: "d", Start: at(0)},
	}
	findings := []finding.Finding{
		{ID: "1", Kind: finding.Replay, TokenID: "a", FirstSeen: at(-20), DetectedAt: at(10)}, // latency from detection, not first sight
		{ID: "2", Kind: finding.Replay, TokenID: "b", FirstSeen: at(30)},                      // no DetectedAt: FirstSeen stands in
		{ID: "3", Kind: finding.Replay, TokenID: "c", DetectedAt: at(-5)},                     // detected before the attack: latency 0
		{ID: "4", Kind: finding.Replay, TokenID: "x", DetectedAt: at(40)},
	}
	r := Evaluate(truth, findings)
	row := kindRow(t, r, finding.Replay)
	if row.Precision != 0.75 || row.Recall != 0.75 {
		t.Errorf("precision %v recall %v, want 0.75 and 0.75 (3 of 4 findings right, 3 of 4 attacks found)", row.Precision, row.Recall)
	}
	want := Latency{Count: 3, P50Seconds: 10, P99Seconds: 30, MaxSeconds: 30}
	if row.Latency != want {
		t.Errorf("latency %+v, want %+v", row.Latency, want)
	}
	if r.Total.TruePositives != 3 || r.Total.FalsePositives != 1 || r.Total.FalseNegatives != 1 || r.Total.Precision != 0.75 {
		t.Errorf("total %+v does not sum the replay row", r.Total)
	}
	if len(r.Missed) != 1 || r.Missed[0].TokenID != "d" {
		t.Errorf("missed %+v, want the attack on token d", r.Missed)
	}
}

func TestEvaluateEmptyDenominators(t *testing.T) {
	r := Evaluate(nil, nil)
	for _, row := range r.Kinds {
		if row.Precision != 1 || row.Recall != 1 {
			t.Errorf("%s: with nothing injected and nothing found precision/recall = %v/%v, want 1/1", row.Kind, row.Precision, row.Recall)
		}
	}
	r = Evaluate([]Truth{{Kind: finding.ClockSkew, Attack: true, Service: "s"}}, nil)
	if row := kindRow(t, r, finding.ClockSkew); row.Recall != 0 || row.Precision != 1 {
		t.Errorf("an attack with no findings: precision %v recall %v, want 1 and 0", row.Precision, row.Recall)
	}
}

func TestResultPrintsTableAndJSON(t *testing.T) {
	truth := []Truth{{Kind: finding.Replay, Scenario: "replay", Attack: true, TokenID: "tokA", Start: at(0)}}
	findings := []finding.Finding{{ID: "f9", Kind: finding.Replay, Key: "token:tokZ", TokenID: "tokZ", FirstSeen: at(1)}}
	r := Evaluate(truth, findings)
	s := r.String()
	for _, want := range []string{"replay", "total", "missed replay (replay)", "token_id=tokA", "false positive replay f9 (unmatched) key token:tokZ"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Kinds          []KindResult    `json:"kinds"`
		Total          KindResult      `json:"total"`
		FalsePositives []FalsePositive `json:"false_positives"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Total.FalseNegatives != 1 || len(back.FalsePositives) != 1 || back.FalsePositives[0].Reason != ReasonUnmatched {
		t.Errorf("JSON did not round-trip the result: %s", b)
	}
	empty, _ := json.Marshal(Evaluate(nil, nil))
	if !bytes.Contains(empty, []byte(`"missed":[]`)) || !bytes.Contains(empty, []byte(`"false_positives":[]`)) {
		t.Errorf("empty lists should marshal as []: %s", empty)
	}
}

func TestTruthAndFindingsFiles(t *testing.T) {
	truth := []Truth{{Kind: finding.Replay, Scenario: "replay", Attack: true, TokenID: "t", Start: at(5)}}
	var buf bytes.Buffer
	if err := WriteTruth(&buf, truth); err != nil {
		t.Fatal(err)
	}
	back, err := ReadTruth(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 1 || back[0] != truth[0] {
		t.Errorf("truth round trip: got %+v want %+v", back, truth)
	}

	tests := []struct {
		name    string
		report  string
		want    int
		wantErr bool
	}{
		{"report with findings", `{"events":{"read":3},"findings":[{"id":"a","kind":"replay","token_id":"t","first_seen":"2026-03-01T12:00:10Z"}]}`, 1, false},
		{"report with no findings", `{"findings":[]}`, 0, false},
		{"document that is not a report", `{"events":{}}`, 0, true},
		{"broken JSON", `{"findings":[`, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := ReadFindings(strings.NewReader(tc.report))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if len(fs) != tc.want {
				t.Errorf("got %d findings, want %d", len(fs), tc.want)
			}
		})
	}
	if _, err := ReadTruth(strings.NewReader(`{"truth":[{"scenario":"replay"}]}`)); err == nil {
		t.Error("a truth entry without a kind should be refused")
	}
}
