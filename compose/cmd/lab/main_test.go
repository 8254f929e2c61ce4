package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/edgecdn/cdn/compose"
)

func TestDelayFlag(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"up", "-delay", "fast"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "-delay") || !strings.Contains(err.Error(), `"fast"`) || !strings.Contains(err.Error(), "auto, netem or userspace") {
		t.Errorf("lab up -delay fast = %v, want an error naming the flag, the value and the choices", err)
	}
	if os.Geteuid() != 0 {
		return
	}
	if netemErr := compose.NetemAvailable(); netemErr != nil {
		// Fails before building or creating anything.
		err := run(context.Background(), []string{"up", "-d", "-delay", "netem"}, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), "sch_netem is missing") || !strings.Contains(err.Error(), "-delay userspace") || !strings.Contains(err.Error(), "docker compose") {
			t.Errorf("lab up -delay netem without sch_netem = %v, want an error saying so and suggesting -delay userspace or docker compose", err)
		}
	} else {
		t.Logf("this kernel has sch_netem: lab up -delay netem would start a lab, not tried here")
	}
}

func TestDelayArguments(t *testing.T) {
	var errb bytes.Buffer
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-topology", "../../../docker-compose.yml"}, "-self: empty"},
		{[]string{"-topology", "nosuch.yml", "-self", "pop-eu"}, "nosuch.yml"},
		{[]string{"-topology", "../../../docker-compose.yml", "-self", "pop-eu", "-delay", "fast"}, `"fast"`},
		{[]string{"-topology", "../../../docker-compose.yml", "-self", "nosuch"}, `"nosuch"`},
		// Outside the service's container: refused, this machine untouched.
		{[]string{"-topology", "../../../docker-compose.yml", "-self", "pop-eu", "-delay", "userspace"}, "on no interface here"},
	} {
		err := run(context.Background(), append([]string{"delay"}, tt.args...), &errb, &errb)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("lab delay %q = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestLinkArguments(t *testing.T) {
	const topo = "../../../docker-compose.yml"
	var out bytes.Buffer
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"want HOST DELAY", "lab link pop-eu 0"}},
		{[]string{"pop-eu"}, []string{"want HOST DELAY"}},
		{[]string{"-topology", topo, "pop-eu", "150"}, []string{`"150"`, "like 150ms"}},
		{[]string{"-topology", topo, "pop-eu", "-5ms"}, []string{`"-5ms"`}},
		{[]string{"-topology", topo, "nosuch", "150ms"}, []string{`no host "nosuch"`, "client-moved"}},
		{[]string{"-topology", "nosuch.yml", "pop-eu", "150ms"}, []string{"nosuch.yml"}},
		// Outside the service's container: refused, this machine untouched.
		{[]string{"-container", "-topology", topo, "pop-eu", "150ms"}, []string{"/run/lab-link.sock", "on no interface here"}},
	} {
		err := run(context.Background(), append([]string{"link"}, tt.args...), &out, &out)
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("lab link %q = %v, want an error containing %q", tt.args, err, w)
			}
		}
	}
	// No native lab: said so, with the way out. (Where one runs, this
	// would change its delays: not tried.)
	if _, err := os.Stat(compose.NativeLinkSocket(stateDir)); err == nil {
		t.Logf("a native lab answers on %s: lab link without a lab not tried", compose.NativeLinkSocket(stateDir))
		return
	}
	err := run(context.Background(), []string{"link", "-topology", topo, "pop-eu", "150ms"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "no native lab is running") || !strings.Contains(err.Error(), "lab link -docker") {
		t.Errorf("lab link without a lab = %v, want an error saying so and pointing at lab up and -docker", err)
	}
}

func TestViewArguments(t *testing.T) {
	var out, errb bytes.Buffer
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"up", "-view", "8099"}, []string{"-view", `"8099"`, "host:port"}},
		{[]string{"view", "extra"}, []string{`"extra"`, "flag"}},
		{[]string{"view", "-topology", "../../../docker-compose.yml", "-cacert", "/nonexistent/root.pem"}, []string{"-cacert", "/nonexistent/root.pem"}},
		{[]string{"view", "-topology", "nosuch.yml"}, []string{"nosuch.yml"}},
	} {
		err := run(context.Background(), tt.args, &out, &errb)
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("lab %v = %v, want an error with %q", tt.args, err, w)
			}
		}
	}
}
