package health

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// The benchmark re-runs this binary as a separate process serving its targets, so that the
	// CPU and memory it measures are the prober's alone.
	if os.Getenv(benchTargetsEnv) != "" {
		if err := serveBenchTargets(); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
