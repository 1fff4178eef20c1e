package dashboards

import (
	"flag"
	"fmt"
	"regexp"
	"strings"

	"github.com/tokenwatch/tokenwatch/alerts"
	"github.com/tokenwatch/tokenwatch/slo"
)

// Defaults of Options: the uids the provisioning file gives the datasources,
// and where the runbooks live.
const (
	DefaultClickHouseUID  = "tokenwatch-clickhouse"
	DefaultPrometheusUID  = "tokenwatch-prometheus"
	DefaultDatabase       = "tokenwatch"
	DefaultRunbookBaseURL = "https://github.com/tokenwatch/tokenwatch/blob/main/docs/runbooks/"
	DefaultClickHouseURL  = "http://localhost:8123"
	DefaultPrometheusURL  = "http://localhost:9090"
	// DefaultDashboardsPath is where Grafana's file provider reads the
	// dashboards; deploy/grafana/dashboards is meant to be mounted there.
	DefaultDashboardsPath = "/var/lib/grafana/dashboards/tokenwatch"
	// FolderUID and FolderTitle name the Grafana folder the boards live in,
	// both when provisioned from files and when pushed over the API.
	FolderUID   = "tokenwatch"
	FolderTitle = "tokenwatch"
)

// Options are everything the generated boards depend on. The zero value
// means the defaults (withDefaults).
type Options struct {
	// SLO is the spec whose targets are drawn as thresholds; nil means
	// slo.Default().
	SLO *slo.Spec
	// BurnWindows is the burn-rate policy the alerts page on, drawn as
	// thresholds on the burn-rate panels; nil means alerts.DefaultBurnWindows().
	BurnWindows []alerts.BurnWindow
	// ClickHouseUID and PrometheusUID are the datasource uids every target
	// names (the provisioning file creates datasources with these uids).
	ClickHouseUID string
	PrometheusUID string
	// Database is the ClickHouse database tokenwatch writes to; every SQL
	// query names its tables with it.
	Database string
	// RunbookBaseURL prefixes the runbook links: <base><AlertName>.md.
	RunbookBaseURL string
	// ClickHouseURL and PrometheusURL are what the provisioning file points
	// the datasources at.
	ClickHouseURL string
	PrometheusURL string
	// DashboardsPath is where the provisioning file's provider reads the JSON.
	DashboardsPath string
}

// RegisterFlags binds the options a user may change on the command line
// (`tokenwatch dashboards`).
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.ClickHouseUID, "clickhouse-uid", DefaultClickHouseUID, "uid of the Grafana ClickHouse datasource the panels query")
	fs.StringVar(&o.PrometheusUID, "prometheus-uid", DefaultPrometheusUID, "uid of the Grafana Prometheus datasource the panels query")
	fs.StringVar(&o.Database, "database", DefaultDatabase, "ClickHouse database tokenwatch writes to")
	fs.StringVar(&o.RunbookBaseURL, "runbook-base-url", DefaultRunbookBaseURL, "base URL of the runbooks; panels link to <base><AlertName>.md")
	fs.StringVar(&o.ClickHouseURL, "clickhouse-url", DefaultClickHouseURL, "HTTP interface of ClickHouse, for the provisioned datasource")
	fs.StringVar(&o.PrometheusURL, "prometheus-url", DefaultPrometheusURL, "Prometheus URL, for the provisioned datasource")
	fs.StringVar(&o.DashboardsPath, "dashboards-path", DefaultDashboardsPath, "directory Grafana's dashboard provider reads")
}

func (o Options) withDefaults() Options {
	if o.SLO == nil {
		o.SLO = slo.Default()
	}
	if o.BurnWindows == nil {
		o.BurnWindows = alerts.DefaultBurnWindows()
	}
	if o.ClickHouseUID == "" {
		o.ClickHouseUID = DefaultClickHouseUID
	}
	if o.PrometheusUID == "" {
		o.PrometheusUID = DefaultPrometheusUID
	}
	if o.Database == "" {
		o.Database = DefaultDatabase
	}
	if o.RunbookBaseURL == "" {
		o.RunbookBaseURL = DefaultRunbookBaseURL
	}
	if o.ClickHouseURL == "" {
		o.ClickHouseURL = DefaultClickHouseURL
	}
	if o.PrometheusURL == "" {
		o.PrometheusURL = DefaultPrometheusURL
	}
	if o.DashboardsPath == "" {
		o.DashboardsPath = DefaultDashboardsPath
	}
	return o
}

// identifier is what a database name must look like to be written into SQL
// unquoted; anything else would be an injection into every panel.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// validate names the option that cannot make a working board.
func (o Options) validate() error {
	if !identifier.MatchString(o.Database) {
		return fmt.Errorf("dashboards: database %q: want a plain identifier (letters, digits, underscore)", o.Database)
	}
	if err := o.SLO.Validate(); err != nil {
		return fmt.Errorf("dashboards: slo spec: %w", err)
	}
	for name, uid := range map[string]string{"clickhouse uid": o.ClickHouseUID, "prometheus uid": o.PrometheusUID} {
		if strings.ContainsAny(uid, " \"'$") || len(uid) > 40 {
			return fmt.Errorf("dashboards: %s %q: want at most 40 characters without spaces, quotes or $", name, uid)
		}
	}
	return nil
}

// runbook is the link to an alert's runbook page.
func (o Options) runbook(alert string) string {
	return alerts.RunbookURL(o.RunbookBaseURL, alert)
}
