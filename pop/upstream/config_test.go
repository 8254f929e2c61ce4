package upstream

import (
	"strings"
	"testing"
	"time"
)

func TestValidateNamesFields(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"no servers", Config{}, []string{"servers: empty"}},
		{"bad servers", Config{Servers: []string{"http://ok:80", "ftp://x", "https://h/path", "http://ok:80", "h:1"}}, []string{
			`servers[1]: "ftp://x" is not an http or https URL`, `servers[2]: "https://h/path" has a path`,
			`servers[3]: "http://ok:80" repeats servers[0]`, `servers[4]`,
		}},
		{"everything else", Config{
			Servers: []string{"https://o:443"}, Balancer: "dice", ConnectTimeout: -1, TotalTimeout: -time.Second,
			MaxConcurrent: -1, WarmConns: -2, FailThreshold: -3, RetryBudget: 2, HealthPath: "healthz",
			FailureRate: 1.5, FailureWindow: -time.Second, FailureMinRequests: -4, MaxEjectionPercent: 101,
		}, []string{
			`balancer: "dice"`, "connect_timeout: -1ns", "total_timeout: -1s", "max_concurrent: -1", "warm_conns: -2",
			"fail_threshold: -3", "retry_budget: 2", `health_path: "healthz"`,
			"failure_rate: 1.5", "failure_window: -1s", "failure_min_requests: -4", "max_ejection_percent: 101",
		}},
		{"negative percent and rate", Config{Servers: []string{"https://o:443"}, FailureRate: -0.1, MaxEjectionPercent: -1}, []string{
			"failure_rate: -0.1", "max_ejection_percent: -1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %v, want it to contain %q", err, want)
				}
			}
			if _, nerr := New(tc.cfg); nerr == nil {
				t.Errorf("New accepted a config Validate rejects")
			}
		})
	}
	for _, ok := range []Config{
		{Servers: []string{"https://o.example"}},
		{Servers: []string{"http://10.0.0.1:8080/", "https://[::1]:443"}, Balancer: Hash, HealthPath: "-", Retries: -1},
		{Servers: []string{"https://o.example"}, FailureRate: 1, MaxEjectionPercent: 100},
		DefaultConfig(),
	} {
		if ok.Servers == nil {
			ok.Servers = []string{"http://o:80"}
		}
		if err := ok.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", ok.Servers, err)
		}
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.Balancer != RoundRobin || c.ConnectTimeout != 5*time.Second || c.TotalTimeout != time.Minute ||
		c.MaxConcurrent != 1024 || c.WarmConns != 2 || c.HealthPath != "/healthz" || c.Retries != 1 || c.RetryBudget != 0.2 ||
		c.FailThreshold != 5 || c.FailureRate != 0.5 || c.FailureWindow != 10*time.Second || c.FailureMinRequests != 20 ||
		c.MaxEjectionPercent != 50 || c.OpenDuration != 5*time.Second {
		t.Errorf("DefaultConfig() = %+v, want the documented defaults", c)
	}
}
