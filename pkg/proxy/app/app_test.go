package app

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestFlagsAndValidation(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--endpoints", "a,b"}, ""},
		{[]string{"--services-selector", "proxy=gw"}, ""},
		{nil, "nothing to serve"},
		{[]string{"--tailnet", "prod"}, ""},
		{[]string{"--tailnet", "prod", "--endpoints", "a"}, "not used with it"},
		{[]string{"--endpoints", "a", "--namespace", ""}, "--namespace is required"},
		{[]string{"--endpoints-selector", "a in (", "--state-dir", ""}, "label selector"},
	} {
		o := NewOptions()
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := o.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
		}
	}
	o := NewOptions()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	o.AddFlags(fs)
	_ = fs.Parse([]string{"--endpoints", "a,b", "--tags", "tag:x,tag:y"})
	if len(o.Endpoints) != 2 || len(o.Tags) != 2 {
		t.Errorf("lists: %v %v", o.Endpoints, o.Tags)
	}
}
