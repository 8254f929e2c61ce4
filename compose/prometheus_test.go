package compose

import (
	"context"
	"net"
	"os"
	"sort"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/edgecdn/cdn/geodns"
)

// promConfig is what compose/prometheus.yml holds of Prometheus's
// configuration.
type promConfig struct {
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		Scheme        string `yaml:"scheme"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// metricsListeners are the lab's /metrics endpoints, host:port by
// service, from the topology: each PoP's -admin listener, and geodns's
// admin listener from the configuration the compose file mounts.
func metricsListeners(t *testing.T, topo *Topology) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, h := range topo.Hosts {
		if len(h.Command) > 0 && h.Command[0] == "pop" {
			admin, ok := h.Flag("admin")
			if !ok {
				t.Fatalf("%s runs pop without -admin: no /metrics", h.Name)
			}
			out[h.Name] = admin
		}
	}
	geo, ok := topo.Host("geodns")
	if !ok {
		t.Fatal("no geodns host")
	}
	if conf, _ := geo.Flag("config"); conf != "/etc/edgecdn/geodns.yaml" {
		t.Fatalf("geodns -config %q, want /etc/edgecdn/geodns.yaml (compose/lab/geodns.yaml)", conf)
	}
	cfg, err := geodns.LoadConfig("lab/geodns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out["geodns"] = cfg.Admin
	return out
}

// TestPrometheusTargets checks compose/prometheus.yml against the
// topology: every target is a lab service's metrics listener at its lab
// address, labelled with that service, scraped on /metrics over HTTP,
// and every service with /metrics is scraped.
func TestPrometheusTargets(t *testing.T) {
	topo, err := Load(context.Background(), "../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg promConfig
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	want := metricsListeners(t, topo)
	seen := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" || sc.Scheme != "" && sc.Scheme != "http" {
			t.Errorf("job %s scrapes %s://...%s, want http and /metrics", sc.JobName, sc.Scheme, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, _, err := net.SplitHostPort(target)
				if err != nil {
					t.Errorf("job %s: target %q: %v", sc.JobName, target, err)
					continue
				}
				var svc *Host
				for _, h := range topo.Hosts {
					if h.Addr.String() == host {
						svc = &h
					}
				}
				switch {
				case svc == nil:
					t.Errorf("job %s: target %s is no host of docker-compose.yml", sc.JobName, target)
				case want[svc.Name] != target:
					t.Errorf("job %s: target %s is %s, whose /metrics is at %q", sc.JobName, target, svc.Name, want[svc.Name])
				case st.Labels["service"] != svc.Name:
					t.Errorf("job %s: target %s labelled service=%q, want %s", sc.JobName, target, st.Labels["service"], svc.Name)
				case svc.Region != "" && st.Labels["region"] != svc.Region:
					t.Errorf("job %s: target %s labelled region=%q, want %s", sc.JobName, target, st.Labels["region"], svc.Region)
				default:
					seen[svc.Name] = true
				}
			}
		}
	}
	var missing []string
	for name := range want {
		if !seen[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("prometheus.yml does not scrape %v, which serve /metrics", missing)
	}
	if _, ok := want["pop-eu"]; !ok {
		t.Errorf("metrics listeners %v: want the PoPs among them", want)
	}
}
