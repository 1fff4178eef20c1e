package chdb

import (
	"fmt"
	"strings"

	chproto "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

// helloQuery is what clickhouse-go asks first over HTTP to learn the server's
// name, version, protocol revision and time zone.
const helloQuery = "select displayname(), version(), revision(), timezone()"

// isHello reports whether sql is clickhouse-go's hello query.
func isHello(sql string) bool {
	return strings.ToLower(strings.Join(strings.Fields(strings.TrimRight(strings.TrimSpace(sql), ";")), " ")) == helloQuery
}

// helloAnswer encodes the hello's one row by hand, in Native at the revision
// the client decodes it with (its own protocol version), and reports
// revision 0.
//
// Why: chDB writes Native without the block-info header, which is the
// revision-0 layout. clickhouse-go decodes every later answer at the revision
// the hello reported, so reporting 0 lets each chDB result pass through byte
// for byte, while the hello itself must match the client's fixed revision.
func helloAnswer(info ServerInfo, clientRevision uint64) ([]byte, error) {
	block := proto.NewBlock()
	for _, c := range []struct{ name, typ string }{
		{"displayName()", "String"},
		{"version()", "String"},
		{"revision()", "UInt32"},
		{"timezone()", "String"},
	} {
		if err := block.AddColumn(c.name, column.Type(c.typ)); err != nil {
			return nil, fmt.Errorf("hello column %s: %w", c.name, err)
		}
	}
	if err := block.Append(info.DisplayName, info.Version, uint32(0), info.Timezone); err != nil {
		return nil, fmt.Errorf("hello row: %w", err)
	}
	var buf chproto.Buffer
	if err := block.Encode(&buf, clientRevision); err != nil {
		return nil, fmt.Errorf("hello encode: %w", err)
	}
	return buf.Buf, nil
}
