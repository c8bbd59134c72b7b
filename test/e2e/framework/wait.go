package framework

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Timeouts that bound every wait of the environment on a loaded two-core machine.
const (
	startTimeout = 3 * time.Minute
	stopTimeout  = time.Minute
)

// waitReady polls GET url with client until it answers 200, failed reports an error, or timeout
// passes.
func waitReady(client *http.Client, url string, timeout time.Duration, failed func() error) error {
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := failed(); err != nil {
			return false, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%d: %s", resp.StatusCode, body)
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s (last answer %q): %w", url, last, err)
	}
	return nil
}
