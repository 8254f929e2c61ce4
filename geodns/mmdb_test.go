package geodns

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/miekg/dns"
)

// writeCityDB makes a small GeoLite2-City-shaped database in the test: no
// download, ever.
func writeCityDB(t *testing.T, nets map[string][3]any) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-City", IncludeReservedNetworks: true, RecordSize: 28})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, v := range nets {
		_, ipnet, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		rec := mmdbtype.Map{
			"location":  mmdbtype.Map{"latitude": mmdbtype.Float64(v[0].(float64)), "longitude": mmdbtype.Float64(v[1].(float64))},
			"continent": mmdbtype.Map{"code": mmdbtype.String(v[2].(string))},
		}
		if err := tree.Insert(ipnet, rec); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "city.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCityDatabaseLocator(t *testing.T) {
	db := writeCityDB(t, map[string][3]any{
		"198.51.100.0/24": {35.7, 139.7, "AS"},  // Tokyo: nearest is Singapore
		"203.0.113.0/25":  {48.9, 2.35, "EU"},   // Paris: nearest is Frankfurt
		"2001:db8::/32":   {37.8, -122.4, "NA"}, // San Francisco: nearest is New York
	})
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) { c.Locator.MMDB = db })
	for _, tt := range []struct {
		ecs   string
		want  string
		scope int
	}{
		{"198.51.100.0/24", "10.77.3.20", 24},
		{"203.0.113.7/32", "10.77.2.20", 25},
		{"2001:db8:1::/48", "10.77.1.20", 32},
		{"10.77.2.0/24", "10.77.2.20", 24}, // static networks win over the database
	} {
		r := query(t, s, "udp", "www.cdn.lab.", dns.TypeA, tt.ecs)
		if got := answerIPs(r); len(got) != 1 || got[0] != tt.want || ecsScope(r) != tt.scope {
			t.Errorf("ECS %s: %v scope %d, want %s scope %d", tt.ecs, got, ecsScope(r), tt.want, tt.scope)
		}
	}
	if _, err := New(Config{Listen: "127.0.0.1:0", Zones: []Zone{{Origin: "a.", NS: []string{"b."}}}, Locator: Locator{MMDB: "/nonexistent.mmdb"}}); err == nil {
		t.Errorf("a missing database: no error")
	}
}

// TestReloadLeavesNoCityDBMapped: the city database is read, not mapped,
// so the old one goes with the old state when a reload replaces it (a
// mapping could never be unmapped: queries may still be using it).
func TestReloadLeavesNoCityDBMapped(t *testing.T) {
	db := writeCityDB(t, map[string][3]any{"198.51.100.0/24": {35.7, 139.7, "AS"}})
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) { c.Locator.MMDB = db })
	for range 3 {
		cfg := s.state.Load().cfg
		if err := s.Reload(cfg); err != nil {
			t.Fatalf("Reload: %v", err)
		}
	}
	if got := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "198.51.100.0/24")); len(got) != 1 || got[0] != "10.77.3.20" {
		t.Errorf("after reloads, ECS 198.51.100.0/24 = %v, want 10.77.3.20 (located by the database)", got)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skipf("no /proc/self/maps: %v", err)
	}
	if n := strings.Count(string(maps), db); n > 0 {
		t.Errorf("%s is mapped %d times after 4 loads, want 0", db, n)
	}
}
