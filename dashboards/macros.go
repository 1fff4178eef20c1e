package dashboards

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// AllValue is the value Grafana gives a variable set to "All" (when the
// variable has no custom all value, as ours do not). Pass it to
// ExpandMacros to expand a query as a dashboard with "All" selected.
const AllValue = "$__all"

// IntervalVar, set in ExpandMacros' vars (e.g. "1m"), fixes the interval
// that $__timeInterval, $__interval_s and $__interval use instead of the
// one Grafana would compute from the time range.
const IntervalVar = "__interval"

// maxDataPoints is what Grafana divides the time range by to get the
// interval when a panel does not say; it is about a panel's width in pixels.
const maxDataPoints = 1000

// ExpandMacros turns a panel's SQL into the SQL the ClickHouse plugin sends
// to ClickHouse for the time range [from, to], in the same three steps:
//
//  1. the plugin's front end replaces $__conditionalAll(cond, $var) with
//     1=1 when $var is All or empty, else with cond;
//  2. Grafana replaces dashboard variables: $var, ${var}, ${var:format}
//     (singlequote, doublequote, sqlstring, csv, pipe, raw, regex, json,
//     text) and [[var]], plus $__from, $__to, $__interval, $__range;
//  3. the plugin's back end expands its macros: $__timeFilter(col),
//     $__timeFilter_ms(col), $__dateFilter(col), $__dateTimeFilter(d, t)
//     and $__dt, $__fromTime, $__toTime and their _ms forms,
//     $__timeInterval(col), $__timeInterval_ms(col) and $__interval_s.
//
// A multi-value selection is given as its values joined by commas; AllValue
// means All, which outside $__conditionalAll becomes the boards' custom all
// value (.*), as Grafana would write it. Variables missing from vars are left as they are, as Grafana
// leaves unknown variables, so a query that needs one fails visibly in
// ClickHouse instead of silently matching nothing.
//
// We reimplement this because the plugin's macro engine lives inside the
// plugin (it cannot be imported without Grafana's backend SDK and its whole
// dependency tree) and the front-end half is TypeScript.
func ExpandMacros(sql string, from, to time.Time, vars map[string]string) string {
	interval := grafanaInterval(from, to)
	if v, ok := vars[IntervalVar]; ok {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			interval = d
		}
	}
	sql = expandConditionalAll(sql, vars)
	sql = expandVariables(sql, from, to, interval, vars)
	return expandPluginMacros(sql, from, to, interval)
}

// expandConditionalAll is the plugin's front-end $__conditionalAll: it runs
// before variables are replaced, so it sees whether $var is All.
func expandConditionalAll(sql string, vars map[string]string) string {
	const macro = "$__conditionalAll("
	for {
		i := strings.LastIndex(sql, macro)
		if i < 0 {
			return sql
		}
		open := i + len(macro) - 1
		args, end, ok := macroArgs(sql, open)
		if !ok || len(args) != 2 {
			return sql // the plugin also gives up on a malformed call
		}
		phrase := args[0]
		if m := varRef.FindStringSubmatch(args[1]); m != nil {
			if v, known := vars[m[1]]; known && (v == "" || v == AllValue) {
				phrase = "1=1"
			}
		}
		sql = sql[:i] + phrase + sql[end:]
	}
}

// varRef finds the variable a $__conditionalAll names: $var or ${var...}.
var varRef = regexp.MustCompile(`\$\{?(\w+)`)

// macroArgs reads the arguments of a call whose "(" is at open: split on
// commas outside nested parentheses and quotes. end is just past ")".
func macroArgs(s string, open int) (args []string, end int, ok bool) {
	depth, start := 0, open+1
	var quote byte
	for i := open; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"' || c == '`':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth == 0 {
				return append(args, s[start:i]), i + 1, true
			}
		case c == ',' && depth == 1:
			args = append(args, s[start:i])
			start = i + 1
		}
	}
	return nil, 0, false
}

// variablePattern is Grafana's template variable syntax.
var variablePattern = regexp.MustCompile(`\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}`)

func expandVariables(sql string, from, to time.Time, interval time.Duration, vars map[string]string) string {
	builtin := map[string]string{
		"__from":        strconv.FormatInt(from.UnixMilli(), 10),
		"__to":          strconv.FormatInt(to.UnixMilli(), 10),
		"__interval":    promDuration(interval),
		"__interval_ms": strconv.FormatInt(interval.Milliseconds(), 10),
		"__range":       promDuration(to.Sub(from)),
		"__range_s":     strconv.FormatInt(int64(to.Sub(from)/time.Second), 10),
		"__range_ms":    strconv.FormatInt(to.Sub(from).Milliseconds(), 10),
	}
	return variablePattern.ReplaceAllStringFunc(sql, func(m string) string {
		g := variablePattern.FindStringSubmatch(m)
		name, format := g[1], ""
		switch {
		case g[2] != "":
			name, format = g[2], g[3]
		case g[4] != "":
			name, format = g[4], g[5]
		}
		if v, ok := builtin[name]; ok {
			return v
		}
		v, ok := vars[name]
		if !ok || strings.HasPrefix(name, "__") {
			return m
		}
		if v == AllValue {
			// Grafana writes a custom all value as it is, unformatted.
			return allValue
		}
		return formatValue(splitMulti(v), format)
	})
}

func splitMulti(v string) []string {
	if v == "" {
		return []string{""}
	}
	return strings.Split(v, ",")
}

// formatValue is Grafana's variable formatting; with no format it is the
// ClickHouse plugin's own: several values become 'a','b', one stays raw.
func formatValue(vs []string, format string) string {
	quote := func(q, esc string) string {
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = q + strings.ReplaceAll(v, q, esc) + q
		}
		return strings.Join(out, ",")
	}
	switch format {
	case "":
		if len(vs) > 1 {
			return "'" + strings.Join(vs, "','") + "'"
		}
		return vs[0]
	case "singlequote":
		return quote("'", `\'`)
	case "doublequote":
		return quote(`"`, `\"`)
	case "sqlstring":
		return quote("'", "''")
	case "pipe":
		return strings.Join(vs, "|")
	case "regex":
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = regexp.QuoteMeta(v)
		}
		if len(out) == 1 {
			return out[0]
		}
		return "(" + strings.Join(out, "|") + ")"
	case "json":
		b, _ := json.Marshal(vs)
		if len(vs) == 1 {
			b, _ = json.Marshal(vs[0])
		}
		return string(b)
	default: // csv, raw, text, and formats we do not model
		return strings.Join(vs, ",")
	}
}

// pluginMacro finds the plugin's back-end macros by name; arguments are read
// by macroArgs so nested parentheses survive.
var pluginMacro = regexp.MustCompile(`\$__(\w+)`)

func expandPluginMacros(sql string, from, to time.Time, interval time.Duration) string {
	dateTime := func(t time.Time) string { return fmt.Sprintf("toDateTime(%d)", t.Unix()) }
	dateTime64 := func(t time.Time) string { return fmt.Sprintf("fromUnixTimestamp64Milli(%d)", t.UnixMilli()) }
	date := func(t time.Time) string { return fmt.Sprintf("toDate('%s')", t.UTC().Format("2006-01-02")) }
	seconds := max(int64(interval/time.Second), 1)
	millis := max(interval.Milliseconds(), 1)

	var b strings.Builder
	rest := sql
	for {
		loc := pluginMacro.FindStringSubmatchIndex(rest)
		if loc == nil {
			b.WriteString(rest)
			return b.String()
		}
		name := rest[loc[2]:loc[3]]
		var args []string
		end := loc[1]
		if end < len(rest) && rest[end] == '(' {
			if a, e, ok := macroArgs(rest, end); ok {
				args, end = a, e
				for i := range args {
					args[i] = strings.TrimSpace(args[i])
				}
			}
		}
		one := func(f func(col string) string) (string, bool) {
			if len(args) != 1 {
				return "", false
			}
			return f(args[0]), true
		}
		var out string
		ok := true
		switch name {
		case "fromTime":
			out = dateTime(from)
		case "toTime":
			out = dateTime(to)
		case "fromTime_ms":
			out = dateTime64(from)
		case "toTime_ms":
			out = dateTime64(to)
		case "timeFilter":
			out, ok = one(func(c string) string {
				return fmt.Sprintf("%s >= %s AND %s <= %s", c, dateTime(from), c, dateTime(to))
			})
		case "timeFilter_ms":
			out, ok = one(func(c string) string {
				return fmt.Sprintf("%s >= %s AND %s <= %s", c, dateTime64(from), c, dateTime64(to))
			})
		case "dateFilter":
			out, ok = one(func(c string) string {
				return fmt.Sprintf("%s >= %s AND %s <= %s", c, date(from), c, date(to))
			})
		case "dateTimeFilter", "dt":
			if ok = len(args) == 2; ok {
				out = fmt.Sprintf("(%s >= %s AND %s <= %s) AND (%s >= %s AND %s <= %s)",
					args[0], date(from), args[0], date(to), args[1], dateTime(from), args[1], dateTime(to))
			}
		case "timeInterval":
			out, ok = one(func(c string) string {
				return fmt.Sprintf("toStartOfInterval(toDateTime(%s), INTERVAL %d second)", c, seconds)
			})
		case "timeInterval_ms":
			out, ok = one(func(c string) string {
				return fmt.Sprintf("toStartOfInterval(toDateTime64(%s, 3), INTERVAL %d millisecond)", c, millis)
			})
		case "interval_s":
			out, end = strconv.FormatInt(seconds, 10), loc[1]
		default:
			ok = false
		}
		if !ok { // not a macro the plugin knows, or bad arguments: leave it
			out, end = rest[loc[0]:loc[1]], loc[1]
		}
		b.WriteString(rest[:loc[0]])
		b.WriteString(out)
		rest = rest[end:]
	}
}

// grafanaInterval is the interval Grafana hands a query: the range divided
// by the data points a panel can draw, rounded to a readable step the way
// Grafana's roundInterval does.
func grafanaInterval(from, to time.Time) time.Duration {
	raw := to.Sub(from) / maxDataPoints
	steps := []struct{ upTo, step time.Duration }{
		{1500 * time.Millisecond, time.Second},
		{3500 * time.Millisecond, 2 * time.Second},
		{7500 * time.Millisecond, 5 * time.Second},
		{12500 * time.Millisecond, 10 * time.Second},
		{17500 * time.Millisecond, 15 * time.Second},
		{25 * time.Second, 20 * time.Second},
		{45 * time.Second, 30 * time.Second},
		{90 * time.Second, time.Minute},
		{210 * time.Second, 2 * time.Minute},
		{450 * time.Second, 5 * time.Minute},
		{750 * time.Second, 10 * time.Minute},
		{1050 * time.Second, 15 * time.Minute},
		{1500 * time.Second, 20 * time.Minute},
		{2700 * time.Second, 30 * time.Minute},
		{5400 * time.Second, time.Hour},
		{9000 * time.Second, 2 * time.Hour},
		{16200 * time.Second, 3 * time.Hour},
		{32400 * time.Second, 6 * time.Hour},
		{86400 * time.Second, 12 * time.Hour},
		{604800 * time.Second, 24 * time.Hour},
	}
	for _, s := range steps {
		if raw <= s.upTo {
			return s.step
		}
	}
	return 7 * 24 * time.Hour
}

// promDuration writes a duration the way Grafana writes $__interval (1m,
// 30s, 2h).
func promDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d >= time.Second && d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}
