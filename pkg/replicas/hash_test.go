package replicas

import (
	"fmt"
	"testing"
)

func TestOwnerSpreadsAndMovesOnlyTheLeaversKeys(t *testing.T) {
	three := []string{"replica-a", "replica-b", "replica-c"}
	const keys = 3000
	owners := map[string]string{}
	count := map[string]int{}
	for i := range keys {
		k := fmt.Sprintf("ns-%d/endpoints-%d", i%7, i)
		owners[k] = Owner(three, k)
		count[owners[k]]++
	}
	for _, m := range three {
		// Each of three members owns a third, within 10% of the keys.
		if c := count[m]; c < keys/3-keys/10 || c > keys/3+keys/10 {
			t.Fatalf("member %s owns %d of %d keys: %v", m, c, keys, count)
		}
	}
	// The member order does not matter.
	reordered := []string{"replica-c", "replica-a", "replica-b"}
	two := []string{"replica-a", "replica-c"}
	for k, o := range owners {
		if got := Owner(reordered, k); got != o {
			t.Fatalf("%s: owner %s with members reordered, %s before", k, got, o)
		}
		// replica-b leaves: only its keys move.
		got := Owner(two, k)
		if o != "replica-b" && got != o {
			t.Fatalf("%s moved from %s to %s although %s stayed", k, o, got, o)
		}
		if got == "replica-b" {
			t.Fatalf("%s still owned by the member that left", k)
		}
	}
	if Owner(nil, "x") != "" {
		t.Fatal("owner without members")
	}
}
