package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/config"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokenwatch.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLayersOverrideInOrderFileThenEnvThenFlags(t *testing.T) {
	p := write(t, `
kafka:
  brokers: [file:9092]
  topics: [from-file]
clickhouse:
  batch_rows: 1000
  batch_interval: 2s
`)
	env := []string{"TOKENWATCH_KAFKA_BROKERS=env-a:9092, env-b:9092", "TOKENWATCH_CLICKHOUSE_BATCH_ROWS=2000", "UNRELATED=1"}
	c, err := config.Load(p, env, []string{"clickhouse.batch_rows=3000"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Kafka.Brokers, ","); got != "env-a:9092,env-b:9092" {
		t.Errorf("brokers = %s, want the environment's list", got)
	}
	if c.Kafka.Topics[0] != "from-file" {
		t.Errorf("topics = %v, want the file's", c.Kafka.Topics)
	}
	if c.ClickHouse.BatchRows != 3000 {
		t.Errorf("batch_rows = %d, want the flag's 3000", c.ClickHouse.BatchRows)
	}
	if c.ClickHouse.BatchInterval != 2*time.Second {
		t.Errorf("batch_interval = %v, want 2s from the file", c.ClickHouse.BatchInterval)
	}
	if c.ClickHouse.Database != "tokenwatch" {
		t.Errorf("database = %q, want the default", c.ClickHouse.Database)
	}
}

func TestErrorsNameTheKeyAndWhatIsExpected(t *testing.T) {
	cases := []struct {
		name, file string
		set        []string
		want       string
	}{
		{"unknown key in the file", "kafka:\n  brokerz: [a:1]\n", nil, "brokerz"},
		{"broker without a port", "kafka:\n  brokers: [localhost]\n", nil, `kafka.brokers: "localhost" is not host:port`},
		{"unknown format", "", []string{"kafka.format=avro"}, "kafka.format: want one of json, otlp_proto, otlp_json, auto"},
		{"duration that is not one", "", []string{"clickhouse.batch_interval=soon"}, "clickhouse.batch_interval"},
		{"number that is not one", "", []string{"clickhouse.batch_rows=many"}, "want a whole number"},
		{"unknown --set key", "", []string{"kafka.nope=1"}, "unknown key"},
		{"sasl without password", "", []string{"kafka.sasl.mechanism=plain", "kafka.sasl.username=u"}, "kafka.sasl: mechanism plain needs username and password"},
		{"bad redaction pattern", "", []string{"redaction.patterns=("}, "redaction.patterns[0]"},
		{"alertmanager url without scheme", "", []string{"alertmanager.urls=localhost:9093"}, "alertmanager.urls"},
		{"database name with a dash", "", []string{"clickhouse.database=token-watch"}, "clickhouse.database"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := ""
			if tc.file != "" {
				p = write(t, tc.file)
			}
			_, err := config.Load(p, nil, tc.set)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestConfigCheckOutputMasksSecrets(t *testing.T) {
	env := []string{"TOKENWATCH_REDACTION_KEY=super-secret-key", "TOKENWATCH_CLICKHOUSE_PASSWORD=hunter2"}
	c, err := config.Load("", env, []string{"kafka.sasl.mechanism=scram-sha-512", "kafka.sasl.username=tw", "kafka.sasl.password=pw-123"})
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Join(c.Lines(), "\n")
	for _, secret := range []string{"super-secret-key", "hunter2", "pw-123"} {
		if strings.Contains(out, secret) {
			t.Fatalf("config check output shows the secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, `kafka.sasl.username: "tw"`) || !strings.Contains(out, `redaction.key: "********"`) {
		t.Fatalf("output lacks the masked or plain values:\n%s", out)
	}
	if c.Redaction.Key != "super-secret-key" {
		t.Fatalf("masking changed the config itself")
	}
}

func TestEveryKeyHasAnEnvironmentVariable(t *testing.T) {
	keys := config.Keys()
	if len(keys) < 30 {
		t.Fatalf("only %d keys", len(keys))
	}
	for _, k := range keys {
		if !strings.HasPrefix(config.EnvName(k), "TOKENWATCH_") || strings.Contains(config.EnvName(k), ".") {
			t.Fatalf("key %s maps to %s", k, config.EnvName(k))
		}
	}
}

// TestEveryKeyIsDocumented keeps docs/config.md true to the code.
func TestEveryKeyIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, k := range config.Keys() {
		name := k
		if strings.HasPrefix(k, "kafka.tls.") || strings.HasPrefix(k, "clickhouse.tls.") {
			name = strings.SplitN(k, ".", 2)[0] + ".tls."
		}
		if !strings.Contains(doc, name) {
			t.Errorf("docs/config.md does not mention %s", k)
		}
	}
}

func TestTheShippedExampleConfigIsValid(t *testing.T) {
	if _, err := config.Load("../deploy/tokenwatch.yaml", nil, nil); err != nil {
		t.Fatalf("deploy/tokenwatch.yaml: %v", err)
	}
}
