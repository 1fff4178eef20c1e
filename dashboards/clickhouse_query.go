package dashboards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
)

// ClickHousePluginID is the plugin id of Grafana's ClickHouse datasource
// (grafana/clickhouse-datasource), the type every ClickHouse target names.
const ClickHousePluginID = "grafana-clickhouse-datasource"

// PrometheusPluginID is the plugin id of Grafana's Prometheus datasource.
const PrometheusPluginID = "prometheus"

// Format is how the ClickHouse plugin shapes a result. The plugin's backend
// (grafana/sqlds) reads it as a number, not a string: 0 turns long results
// (time, label, value) into one series per label, 1 keeps a table.
type Format int

const (
	FormatTimeSeries Format = 0
	FormatTable      Format = 1
)

// String names the format the way the plugin's editor does.
func (f Format) String() string {
	switch f {
	case FormatTimeSeries:
		return "time_series"
	case FormatTable:
		return "table"
	}
	return fmt.Sprintf("format(%d)", int(f))
}

// ClickHouseQuery is one target of the ClickHouse datasource plugin in its
// SQL editor mode. The SDK ships query types for core datasources only, so
// this is the plugin's query model (rawSql, format, queryType, editorType,
// datasource) as an SDK dataquery variant: panels and annotations take it
// like any other target, and the strict decoder checks it once registered
// with ClickHouseVariantConfig.
type ClickHouseQuery struct {
	RefId      string                `json:"refId"`
	Hide       *bool                 `json:"hide,omitempty"`
	Datasource *common.DataSourceRef `json:"datasource,omitempty"`
	EditorType string                `json:"editorType"`
	QueryType  string                `json:"queryType"`
	Format     Format                `json:"format"`
	RawSql     string                `json:"rawSql"`
}

// Compile-time checks that the SDK accepts the type and its builder.
var (
	_ variants.Dataquery              = ClickHouseQuery{}
	_ cog.Builder[variants.Dataquery] = (*ClickHouseQueryBuilder)(nil)
)

// ImplementsDataqueryVariant marks ClickHouseQuery as an SDK dataquery.
func (ClickHouseQuery) ImplementsDataqueryVariant() {}

// DataqueryType is the plugin id, which is how the SDK's runtime picks the
// decoder for a target.
func (ClickHouseQuery) DataqueryType() string { return ClickHousePluginID }

// Equals reports whether two targets are the same query.
func (q ClickHouseQuery) Equals(other variants.Dataquery) bool {
	o, ok := other.(ClickHouseQuery)
	if !ok {
		if p, isPtr := other.(*ClickHouseQuery); isPtr && p != nil {
			o, ok = *p, true
		}
	}
	if !ok {
		return false
	}
	a, _ := json.Marshal(q)
	b, _ := json.Marshal(o)
	return bytes.Equal(a, b)
}

// Validate names what would make the plugin refuse or misread the target.
func (q ClickHouseQuery) Validate() error {
	var errs []error
	if q.RawSql == "" {
		errs = append(errs, errors.New("rawSql: a ClickHouse target needs SQL"))
	}
	if q.EditorType != "sql" {
		errs = append(errs, fmt.Errorf("editorType: want %q, got %q", "sql", q.EditorType))
	}
	if q.QueryType != "sql" {
		errs = append(errs, fmt.Errorf("queryType: want %q, got %q", "sql", q.QueryType))
	}
	if q.Format != FormatTimeSeries && q.Format != FormatTable {
		errs = append(errs, fmt.Errorf("format: want 0 (time series) or 1 (table), got %d", int(q.Format)))
	}
	if q.Datasource == nil || q.Datasource.Type == nil || *q.Datasource.Type != ClickHousePluginID {
		errs = append(errs, fmt.Errorf("datasource: want type %q", ClickHousePluginID))
	} else if q.Datasource.Uid == nil || *q.Datasource.Uid == "" {
		errs = append(errs, errors.New("datasource.uid: want the ClickHouse datasource's uid"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("clickhouse target %q: %w", q.RefId, errors.Join(errs...))
	}
	return nil
}

// ClickHouseVariantConfig tells the SDK's runtime how to decode ClickHouse
// targets; register it (cog.NewRuntime().RegisterDataqueryVariant) before
// decoding a dashboard so its targets are checked rather than kept as
// unknown maps.
func ClickHouseVariantConfig() variants.DataqueryConfig {
	return variants.DataqueryConfig{
		Identifier: ClickHousePluginID,
		DataqueryUnmarshaler: func(raw []byte) (variants.Dataquery, error) {
			var q ClickHouseQuery
			if err := json.Unmarshal(raw, &q); err != nil {
				return nil, fmt.Errorf("clickhouse target: %w", err)
			}
			return q, nil
		},
		StrictDataqueryUnmarshaler: strictClickHouseQuery,
	}
}

// clickHouseQueryFields are the JSON keys of ClickHouseQuery; true marks
// the ones the plugin needs.
var clickHouseQueryFields = map[string]bool{
	"refId": true, "datasource": true, "editorType": true, "queryType": true, "format": true, "rawSql": true,
	"hide": false,
}

// strictClickHouseQuery decodes a target and refuses unknown, misspelled or
// missing fields. encoding/json alone would not do: it matches keys without
// regard to case even with DisallowUnknownFields, so "rawSQL" would pass
// and the plugin, which is case-sensitive, would get no SQL.
func strictClickHouseQuery(raw []byte) (variants.Dataquery, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, fmt.Errorf("clickhouse target: %w", err)
	}
	var errs []error
	for k := range fields {
		if _, known := clickHouseQueryFields[k]; !known {
			errs = append(errs, fmt.Errorf("unexpected field %q", k))
		}
	}
	for k, required := range clickHouseQueryFields {
		if _, present := fields[k]; required && !present {
			errs = append(errs, fmt.Errorf("required field %q is missing", k))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("clickhouse target: %w", errors.Join(errs...))
	}
	var q ClickHouseQuery
	if err := json.Unmarshal(raw, &q); err != nil {
		return nil, fmt.Errorf("clickhouse target: %w", err)
	}
	if err := q.Validate(); err != nil {
		return nil, err
	}
	return q, nil
}

// ClickHouseQueryBuilder builds a ClickHouseQuery for panels, annotations
// and anything else that takes a cog.Builder[variants.Dataquery].
type ClickHouseQueryBuilder struct {
	q ClickHouseQuery
}

// NewClickHouseQueryBuilder starts a SQL-editor target on the datasource uid.
func NewClickHouseQueryBuilder(datasourceUID, sql string) *ClickHouseQueryBuilder {
	typ, uid := ClickHousePluginID, datasourceUID
	return &ClickHouseQueryBuilder{q: ClickHouseQuery{
		RefId:      "A",
		Datasource: &common.DataSourceRef{Type: &typ, Uid: &uid},
		EditorType: "sql",
		QueryType:  "sql",
		Format:     FormatTable,
		RawSql:     sql,
	}}
}

// RefId names the target within its panel (A, B, ...).
func (b *ClickHouseQueryBuilder) RefId(refID string) *ClickHouseQueryBuilder {
	b.q.RefId = refID
	return b
}

// Format sets how the plugin shapes the result.
func (b *ClickHouseQueryBuilder) Format(f Format) *ClickHouseQueryBuilder {
	b.q.Format = f
	return b
}

// Hide keeps the target from being drawn (it still runs for transformations).
func (b *ClickHouseQueryBuilder) Hide(hide bool) *ClickHouseQueryBuilder {
	b.q.Hide = &hide
	return b
}

// Build returns the target, or what is wrong with it as cog.BuildErrors:
// the SDK's panel builders type-assert their targets' errors to that.
func (b *ClickHouseQueryBuilder) Build() (variants.Dataquery, error) {
	if err := b.q.Validate(); err != nil {
		return nil, cog.MakeBuildErrors("clickhouse_target", err)
	}
	return b.q, nil
}
