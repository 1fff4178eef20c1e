package ingest

import (
	"bytes"
	"fmt"
)

// Format is how the messages of a topic are encoded.
type Format uint8

const (
	// FormatJSON is the v1 contract: one JSON object per message.
	FormatJSON Format = iota + 1
	// FormatOTLPProto is an OTLP logs batch in protobuf, as the
	// Collector's Kafka exporter writes with encoding otlp_proto.
	FormatOTLPProto
	// FormatOTLPJSON is an OTLP logs batch in OTLP/JSON (encoding otlp_json).
	FormatOTLPJSON
	// FormatAuto sniffs each message: a JSON object whose first key is
	// resourceLogs (or resource_logs) is OTLP JSON, any other JSON object is
	// v1 JSON, anything else is OTLP protobuf. It suits analyze files of
	// unknown origin; a topic should name its format.
	FormatAuto
)

var formatNames = [...]string{"", "json", "otlp_proto", "otlp_json", "auto"}

func (f Format) String() string {
	if int(f) < len(formatNames) && f != 0 {
		return formatNames[f]
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// ParseFormat maps a configured name (json, otlp_proto, otlp_json, auto) to a
// Format.
func ParseFormat(s string) (Format, error) {
	for i := 1; i < len(formatNames); i++ {
		if formatNames[i] == s {
			return Format(i), nil
		}
	}
	return 0, fmt.Errorf("ingest: unknown format %q: want one of json, otlp_proto, otlp_json, auto", s)
}

// sniff decides the encoding of one message for FormatAuto.
func sniff(value []byte) Format {
	i := skipSpace(value, 0)
	if i >= len(value) || value[i] != '{' {
		return FormatOTLPProto
	}
	i = skipSpace(value, i+1)
	rest := value[i:]
	if bytes.HasPrefix(rest, []byte(`"resourceLogs"`)) || bytes.HasPrefix(rest, []byte(`"resource_logs"`)) {
		return FormatOTLPJSON
	}
	return FormatJSON
}
