package consumer

import (
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/store"
)

// Dialer builds the kafka-go dialer with the config's TLS and SASL.
func Dialer(c config.Kafka) (*kafka.Dialer, error) {
	d := &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}
	if c.TLS.Enabled {
		t, err := store.TLSConfig(c.TLS)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls: %w", err)
		}
		d.TLS = t
	}
	m, err := Mechanism(c.SASL)
	if err != nil {
		return nil, err
	}
	d.SASLMechanism = m
	return d, nil
}

// Transport is the Writer's equivalent of Dialer (for gen and dead letters).
func Transport(c config.Kafka) (*kafka.Transport, error) {
	t := &kafka.Transport{DialTimeout: 10 * time.Second}
	if c.TLS.Enabled {
		tc, err := store.TLSConfig(c.TLS)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls: %w", err)
		}
		t.TLS = tc
	}
	m, err := Mechanism(c.SASL)
	if err != nil {
		return nil, err
	}
	t.SASL = m
	return t, nil
}

// Mechanism maps the SASL config to kafka-go's mechanism (nil when off).
func Mechanism(s config.SASL) (sasl.Mechanism, error) {
	switch strings.ToLower(s.Mechanism) {
	case "":
		return nil, nil
	case "plain":
		return plain.Mechanism{Username: s.Username, Password: s.Password}, nil
	case "scram-sha-256":
		m, err := scram.Mechanism(scram.SHA256, s.Username, s.Password)
		if err != nil {
			return nil, fmt.Errorf("kafka.sasl: %w", err)
		}
		return m, nil
	case "scram-sha-512":
		m, err := scram.Mechanism(scram.SHA512, s.Username, s.Password)
		if err != nil {
			return nil, fmt.Errorf("kafka.sasl: %w", err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism: want plain, scram-sha-256 or scram-sha-512, got %q", s.Mechanism)
}
