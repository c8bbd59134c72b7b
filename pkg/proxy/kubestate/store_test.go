package kubestate

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"tailscale.com/ipn"
)

func TestStoreKeepsStateAcrossInstances(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p-0"}})
	s, err := New(ctx, client, "ns", "p-0")
	if err != nil {
		t.Fatal(err)
	}
	if !s.Empty() {
		t.Fatal("a new Secret should be empty")
	}
	if _, err := s.ReadState("_machinekey"); !errors.Is(err, ipn.ErrStateNotExist) {
		t.Fatalf("ReadState of a missing key: %v, want ErrStateNotExist", err)
	}
	if err := s.WriteState("_machinekey", []byte("mk")); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteState("profile-a/b", []byte("p")); err != nil {
		t.Fatal(err)
	}
	sec, err := client.CoreV1().Secrets("ns").Get(ctx, "p-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["_machinekey"]) != "mk" || string(sec.Data["profile-a_b"]) != "p" {
		t.Fatalf("Secret data = %v", sec.Data)
	}
	again, err := New(ctx, client, "ns", "p-0")
	if err != nil {
		t.Fatal(err)
	}
	if again.Empty() {
		t.Fatal("the state should survive a new store")
	}
	if v, err := again.ReadState("profile-a/b"); err != nil || string(v) != "p" {
		t.Fatalf("ReadState = %q, %v", v, err)
	}
	if err := again.WriteState("_machinekey", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := again.ReadState("_machinekey"); !errors.Is(err, ipn.ErrStateNotExist) {
		t.Fatalf("deleted key: %v", err)
	}
}

func TestNewFailsWithoutSecret(t *testing.T) {
	if _, err := New(context.Background(), fake.NewClientset(), "ns", "missing"); err == nil {
		t.Fatal("want an error for a missing Secret")
	}
}
