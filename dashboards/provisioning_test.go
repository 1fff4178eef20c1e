package dashboards

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestProvisioningPointsGrafanaAtTheDatasourcesThePanelsName(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		opts                 Options
		host, protocol, path string
		port                 int
		secure               bool
		promURL, db          string
	}{
		{"the defaults are the demo's engine and a local Prometheus", Options{},
			"localhost", "http", DefaultDashboardsPath, 8123, false, "http://localhost:9090", "tokenwatch"},
		{"a TLS ClickHouse and a remote Prometheus", Options{ClickHouseURL: "https://ch.example:8443", PrometheusURL: "https://prom.example", Database: "auth", DashboardsPath: "/srv/boards"},
			"ch.example", "http", "/srv/boards", 8443, true, "https://prom.example", "auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := Provisioning(tc.opts)
			var ds struct {
				Datasources []struct {
					Name, Type, UID, URL string
					JSONData             map[string]any    `yaml:"jsonData"`
					Secure               map[string]string `yaml:"secureJsonData"`
				}
			}
			if err := yaml.Unmarshal(files[DatasourcesFile], &ds); err != nil {
				t.Fatalf("%s: %v", DatasourcesFile, err)
			}
			byType := map[string]int{}
			for i, d := range ds.Datasources {
				byType[d.Type] = i
			}
			ch, prom := ds.Datasources[byType[ClickHousePluginID]], ds.Datasources[byType[PrometheusPluginID]]
			if ch.Type != ClickHousePluginID || ch.UID != DefaultClickHouseUID {
				t.Errorf("ClickHouse datasource is %s %q, want %s %q", ch.Type, ch.UID, ClickHousePluginID, DefaultClickHouseUID)
			}
			if ch.JSONData["host"] != tc.host || ch.JSONData["port"] != tc.port || ch.JSONData["protocol"] != tc.protocol ||
				ch.JSONData["secure"] != tc.secure || ch.JSONData["defaultDatabase"] != tc.db {
				t.Errorf("ClickHouse settings %v; want host %s port %d protocol %s secure %v database %s", ch.JSONData, tc.host, tc.port, tc.protocol, tc.secure, tc.db)
			}
			if pw := ch.Secure["password"]; !strings.HasPrefix(pw, "$") {
				t.Errorf("the ClickHouse password is written into the file (%q); want an environment reference", pw)
			}
			if prom.Type != PrometheusPluginID || prom.UID != DefaultPrometheusUID || prom.URL != tc.promURL {
				t.Errorf("Prometheus datasource is %s %q at %s, want %s %q at %s", prom.Type, prom.UID, prom.URL, PrometheusPluginID, DefaultPrometheusUID, tc.promURL)
			}

			var prov struct {
				Providers []struct {
					Folder    string
					FolderUID string `yaml:"folderUid"`
					Type      string
					Options   map[string]string
				}
			}
			if err := yaml.Unmarshal(files[ProvidersFile], &prov); err != nil {
				t.Fatalf("%s: %v", ProvidersFile, err)
			}
			if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" || prov.Providers[0].Options["path"] != tc.path ||
				prov.Providers[0].FolderUID != FolderUID {
				t.Errorf("dashboard provider %+v; want one file provider reading %s into folder %s", prov.Providers, tc.path, FolderUID)
			}
		})
	}
}
