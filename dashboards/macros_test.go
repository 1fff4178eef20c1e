package dashboards

import (
	"testing"
	"time"
)

func TestExpandMacrosLikeTheClickHousePlugin(t *testing.T) {
	from := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC) // 1795946400
	to := from.Add(2 * time.Hour)                          // 1795953600
	for _, tc := range []struct {
		name string
		sql  string
		vars map[string]string
		want string
	}{
		{"a time filter compares the column with the range in seconds",
			"WHERE $__timeFilter(ts)", nil,
			"WHERE ts >= toDateTime(1795946400) AND ts <= toDateTime(1795953600)"},
		{"a millisecond time filter keeps milliseconds",
			"WHERE $__timeFilter_ms(ts)", nil,
			"WHERE ts >= fromUnixTimestamp64Milli(1795946400000) AND ts <= fromUnixTimestamp64Milli(1795953600000)"},
		{"from and to are the range's ends",
			"$__fromTime, $__toTime, $__fromTime_ms", nil,
			"toDateTime(1795946400), toDateTime(1795953600), fromUnixTimestamp64Milli(1795946400000)"},
		{"a date filter compares dates",
			"$__dateFilter(d)", nil,
			"d >= toDate('2026-11-29') AND d <= toDate('2026-11-29')"},
		{"two hours over a thousand points rounds to a five second interval",
			"$__timeInterval(ts) AS time, $__interval_s", nil,
			"toStartOfInterval(toDateTime(ts), INTERVAL 5 second) AS time, 5"},
		{"a panel's interval overrides Grafana's",
			"$__timeInterval(minute), $__timeInterval_ms(ts)", map[string]string{IntervalVar: "5m"},
			"toStartOfInterval(toDateTime(minute), INTERVAL 300 second), toStartOfInterval(toDateTime64(ts, 3), INTERVAL 300000 millisecond)"},
		{"All drops a conditional filter",
			"WHERE $__conditionalAll(service IN (${service:singlequote}), $service)", map[string]string{"service": AllValue},
			"WHERE 1=1"},
		{"an empty selection drops a conditional filter too",
			"WHERE $__conditionalAll(session_id = ${session_id:sqlstring}, $session_id)", map[string]string{"session_id": ""},
			"WHERE 1=1"},
		{"a selection keeps the condition with its values quoted",
			"WHERE $__conditionalAll(service IN (${service:singlequote}), $service)", map[string]string{"service": "api-gw,orders"},
			"WHERE service IN ('api-gw','orders')"},
		{"several conditional filters are expanded independently",
			"$__conditionalAll(a IN (${a:singlequote}), $a) AND $__conditionalAll(b IN (${b:singlequote}), ${b})",
			map[string]string{"a": AllValue, "b": "x"},
			"1=1 AND b IN ('x')"},
		{"singlequote escapes a quote with a backslash",
			"${issuer:singlequote}", map[string]string{"issuer": "it's"},
			`'it\'s'`},
		{"sqlstring doubles a quote",
			"${session_id:sqlstring}", map[string]string{"session_id": "a'b"},
			"'a''b'"},
		{"without a format one value stays raw and several are quoted by the plugin",
			"$one / $many", map[string]string{"one": "api-gw", "many": "a,b"},
			"api-gw / 'a','b'"},
		{"All outside a conditional filter is the match-all value",
			`service=~"$service"`, map[string]string{"service": AllValue},
			`service=~".*"`},
		{"pipe, csv and regex formats",
			"${v:pipe} ${v:csv} ${v:regex}", map[string]string{"v": "a.b,c"},
			`a.b|c a.b,c (a\.b|c)`},
		{"a variable the query does not know is left for ClickHouse to refuse",
			"WHERE request_id = ${request_id:sqlstring}", nil,
			"WHERE request_id = ${request_id:sqlstring}"},
		{"Grafana's global range variables are in milliseconds",
			"$__from $__to", nil,
			"1795946400000 1795953600000"},
		{"a macro argument may hold parentheses",
			"$__timeFilter(toDateTime(ts))", nil,
			"toDateTime(ts) >= toDateTime(1795946400) AND toDateTime(ts) <= toDateTime(1795953600)"},
		{"an unknown macro is left alone",
			"$__notAMacro(x)", nil,
			"$__notAMacro(x)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExpandMacros(tc.sql, from, to, tc.vars); got != tc.want {
				t.Errorf("ExpandMacros(%q)\n got %q\nwant %q", tc.sql, got, tc.want)
			}
		})
	}
}

func TestGrafanaIntervalRoundsToReadableSteps(t *testing.T) {
	from := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		span time.Duration
		want time.Duration
	}{
		{5 * time.Minute, time.Second},
		{3 * time.Hour, 10 * time.Second},
		{24 * time.Hour, time.Minute},
		{7 * 24 * time.Hour, 10 * time.Minute},
		{30 * 24 * time.Hour, 30 * time.Minute},
		{90 * 24 * time.Hour, 2 * time.Hour},
	} {
		if got := grafanaInterval(from, from.Add(tc.span)); got != tc.want {
			t.Errorf("a %s range: interval %s, want %s", tc.span, got, tc.want)
		}
	}
}
