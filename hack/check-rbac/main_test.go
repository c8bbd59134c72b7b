package main

import (
	"strings"
	"testing"
)

func TestCheckRefusesClusterWideWrites(t *testing.T) {
	bad, err := check(strings.NewReader(`kind: ClusterRole
metadata: {name: wide}
rules:
- apiGroups: [""]
  resources: ["secrets", "pods"]
  verbs: ["get", "delete"]
---
kind: Role
metadata: {name: narrow, namespace: x}
rules:
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
---
kind: ClusterRole
metadata: {name: reader}
rules:
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 1 || !strings.Contains(bad[0], "ClusterRole wide grants delete on secrets") {
		t.Fatalf("findings %q", bad)
	}
}
