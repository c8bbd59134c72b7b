package envoygateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Status is the status Envoy Gateway computed for one resource. In standalone mode the file
// provider has nowhere to write statuses and logs each one instead ("Got new status for
// <Kind>", with the status as YAML); Statuses reads them back.
type Status struct {
	// Conditions per parent (a route's parentRefs) or ancestor (a policy's targets), in order.
	Parents [][]metav1.Condition
}

// Condition returns the condition of type typ of parent i, nil when there is none.
func (s Status) Condition(i int, typ string) *metav1.Condition {
	if i >= len(s.Parents) {
		return nil
	}
	for j := range s.Parents[i] {
		if s.Parents[i][j].Type == typ {
			return &s.Parents[i][j]
		}
	}
	return nil
}

// Statuses returns the latest logged status of each resource of kind, by "namespace/name". It
// needs Options.JSONLogs.
func (in *Instance) Statuses(kind string) (map[string]Status, error) {
	data, err := os.ReadFile(in.LogPath)
	if err != nil {
		return nil, err
	}
	out := map[string]Status{}
	prefix := "Got new status for " + kind + "\n"
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var line struct {
			Msg string `json:"msg"`
			Key string `json:"key"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || !strings.HasPrefix(line.Msg, prefix) {
			continue
		}
		var st struct {
			Parents []struct {
				Conditions []metav1.Condition `json:"conditions"`
			} `json:"parents"`
			Ancestors []struct {
				Conditions []metav1.Condition `json:"conditions"`
			} `json:"ancestors"`
		}
		if err := yaml.Unmarshal([]byte(strings.TrimPrefix(line.Msg, prefix)), &st); err != nil {
			continue
		}
		var s Status
		for _, p := range append(st.Parents, st.Ancestors...) {
			s.Parents = append(s.Parents, p.Conditions)
		}
		out[line.Key] = s
	}
	return out, sc.Err()
}
