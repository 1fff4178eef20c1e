package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts every environment override: kafka.brokers is
// TOKENWATCH_KAFKA_BROKERS, clickhouse.batch_rows is TOKENWATCH_CLICKHOUSE_BATCH_ROWS.
const EnvPrefix = "TOKENWATCH_"

// key is one settable leaf of the config, found by walking the yaml tags.
type key struct {
	path   string // kafka.sasl.password
	field  reflect.Value
	secret bool
}

func keys(c *Config) []key {
	var out []key
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if name == "" || name == "-" {
				continue
			}
			p := prefix + name
			fv := v.Field(i)
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
				walk(fv, p+".")
				continue
			}
			out = append(out, key{path: p, field: fv, secret: f.Tag.Get("secret") == "true"})
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// Keys lists every dotted key, for --help and docs.
func Keys() []string {
	c := Default()
	var out []string
	for _, k := range keys(&c) {
		out = append(out, k.path)
	}
	sort.Strings(out)
	return out
}

// EnvName is the environment variable that overrides a dotted key.
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// Set applies one "key=value" override; lists are comma-separated.
func Set(c *Config, kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("--set %q: want key=value, e.g. kafka.brokers=host:9092", kv)
	}
	for _, key := range keys(c) {
		if key.path == strings.TrimSpace(k) {
			return setValue(key, v, "--set "+key.path)
		}
	}
	return fmt.Errorf("--set %s: unknown key (see `tokenwatch config keys`)", k)
}

func applyEnv(c *Config, environ []string) error {
	env := map[string]string{}
	for _, e := range environ {
		if k, v, ok := strings.Cut(e, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			env[k] = v
		}
	}
	for _, key := range keys(c) {
		if v, ok := env[EnvName(key.path)]; ok {
			if err := setValue(key, v, EnvName(key.path)); err != nil {
				return err
			}
		}
	}
	return nil
}

func setValue(k key, v, where string) error {
	f := k.field
	switch f.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%s (%s): want a duration like 500ms, 30s or 10m", where, k.path)
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(v)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%s (%s): want true or false", where, k.path)
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return fmt.Errorf("%s (%s): want a whole number", where, k.path)
		}
		f.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return fmt.Errorf("%s (%s): want a number", where, k.path)
		}
		f.SetFloat(n)
	case reflect.Slice:
		var items []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		f.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("%s (%s): cannot be set from text", where, k.path)
	}
	return nil
}

// Masked returns a copy with every secret replaced, for printing.
func (c Config) Masked() Config {
	m := c
	m.Kafka.Brokers = append([]string(nil), c.Kafka.Brokers...)
	for _, k := range keys(&m) {
		if k.secret && k.field.String() != "" {
			k.field.SetString("********")
		}
	}
	return m
}

// Lines prints the config one "key: value" a line in file order, durations
// as written in the file and secrets masked, for `config check`.
func (c Config) Lines() []string {
	m := c.Masked()
	var out []string
	for _, k := range keys(&m) {
		var v string
		switch x := k.field.Interface().(type) {
		case time.Duration:
			v = x.String()
		case []string:
			v = "[" + strings.Join(x, ", ") + "]"
		case string:
			v = strconv.Quote(x)
		default:
			v = fmt.Sprint(x)
		}
		out = append(out, k.path+": "+v)
	}
	return out
}
