package pop

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestAccessLogConfig: access_log and access_log_buffer_bytes are read
// from the file; a negative buffer and an access log that cannot be
// opened are errors naming the field.
func TestAccessLogConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(goodConfig + "access_log: /var/log/edgecdn/access.log\naccess_log_buffer_bytes: 65536\n"))
	if err != nil {
		t.Fatalf("ParseConfig = %v", err)
	}
	if cfg.AccessLog != "/var/log/edgecdn/access.log" || cfg.AccessLogBufferBytes != 65536 {
		t.Errorf("access_log %q, access_log_buffer_bytes %d; want the file's", cfg.AccessLog, cfg.AccessLogBufferBytes)
	}
	_, err = ParseConfig([]byte(goodConfig + "access_log_buffer_bytes: -1\n"))
	if err == nil || !strings.Contains(err.Error(), "access_log_buffer_bytes: -1, want 0 (default: 4 MiB) or more") {
		t.Errorf("ParseConfig(negative buffer) = %v, want an error naming access_log_buffer_bytes", err)
	}
	cfg, err = ParseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "missing", "access.log")
	cfg.AccessLog = bad
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "access_log: open "+bad) || !strings.Contains(err.Error(), "or - for standard output") {
		t.Errorf("New with access_log %q = %v, want an error naming access_log and what would do", bad, err)
	}
}
