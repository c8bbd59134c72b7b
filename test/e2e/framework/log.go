package framework

import (
	"flag"
	"fmt"

	"k8s.io/klog/v2"
)

// LogToFile sends the klog output of the test process (the in-process servers and etcd
// notices) to path instead of stderr, keeping test output readable.
func LogToFile(path string) error {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for name, value := range map[string]string{
		"logtostderr": "false", "alsologtostderr": "false", "stderrthreshold": "FATAL",
		"log_file": path, "one_output": "true",
	} {
		if err := fs.Set(name, value); err != nil {
			return fmt.Errorf("setting klog flag %s: %w", name, err)
		}
	}
	return nil
}
