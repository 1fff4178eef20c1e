package consumer

import (
	"strings"
	"testing"

	"github.com/tokenwatch/tokenwatch/config"
)

func TestSASLMechanismsAreTheOnesConfigured(t *testing.T) {
	for mech, want := range map[string]string{"plain": "PLAIN", "scram-sha-256": "SCRAM-SHA-256", "SCRAM-SHA-512": "SCRAM-SHA-512"} {
		m, err := Mechanism(config.SASL{Mechanism: mech, Username: "tw", Password: "pw"})
		if err != nil || m == nil || m.Name() != want {
			t.Errorf("%s: got %v, %v; want %s", mech, m, err, want)
		}
	}
	if m, err := Mechanism(config.SASL{}); m != nil || err != nil {
		t.Errorf("no mechanism configured gave %v, %v", m, err)
	}
	if _, err := Mechanism(config.SASL{Mechanism: "gssapi"}); err == nil || !strings.Contains(err.Error(), "kafka.sasl.mechanism") {
		t.Errorf("unknown mechanism: %v", err)
	}
}

func TestTLSErrorsNameTheKey(t *testing.T) {
	c := config.Default().Kafka
	c.TLS = config.TLS{Enabled: true, CAFile: "/nonexistent/ca.pem"}
	if _, err := Dialer(c); err == nil || !strings.Contains(err.Error(), "kafka.tls") {
		t.Fatalf("a missing CA file gave %v", err)
	}
	if _, err := Transport(c); err == nil || !strings.Contains(err.Error(), "kafka.tls") {
		t.Fatalf("a missing CA file gave %v", err)
	}
	c.TLS = config.TLS{Enabled: true}
	d, err := Dialer(c)
	if err != nil || d.TLS == nil {
		t.Fatalf("TLS with the system roots: %v %v", d, err)
	}
}
