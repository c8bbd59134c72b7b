package registry

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/storage/names"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

func endpoints() *gateway.TailscaleEndpoints {
	return &gateway.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Generation: 4,
			CreationTimestamp: metav1.NewTime(time.Now().Add(-72 * time.Hour))},
		Spec: gateway.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Endpoints: []gateway.TailscaleEndpoint{
			{Name: "a", TailscaleIP: "100.64.0.1", Protocol: gateway.ProtocolHTTP},
			{Name: "b", TailscaleIP: "100.64.0.2", Protocol: gateway.ProtocolTCP},
		}},
		Status: gateway.TailscaleEndpointsStatus{HealthyEndpoints: 1},
	}
}

func endpointsStrategy() strategy[gateway.TailscaleEndpoints, *gateway.TailscaleEndpoints] {
	return strategy[gateway.TailscaleEndpoints, *gateway.TailscaleEndpoints]{
		ObjectTyper: runtime.NewScheme(), NameGenerator: names.SimpleNameGenerator, kind: TailscaleEndpoints}
}

func TestPrepareForCreateDropsStatusAndSetsGeneration(t *testing.T) {
	obj := endpoints()
	endpointsStrategy().PrepareForCreate(context.Background(), obj)
	if obj.Status.HealthyEndpoints != 0 || obj.Generation != 1 {
		t.Fatalf("status %+v generation %d", obj.Status, obj.Generation)
	}
}

func TestPrepareForUpdate(t *testing.T) {
	s := endpointsStrategy()
	old := endpoints()

	sameSpec := endpoints()
	sameSpec.Status.HealthyEndpoints = 2
	sameSpec.Labels = map[string]string{"new": "label"}
	s.PrepareForUpdate(context.Background(), sameSpec, old)
	if sameSpec.Generation != 4 || sameSpec.Status.HealthyEndpoints != 1 {
		t.Fatalf("metadata-only update: generation %d status %+v", sameSpec.Generation, sameSpec.Status)
	}

	newSpec := endpoints()
	newSpec.Spec.Endpoints[0].Port = 81
	s.PrepareForUpdate(context.Background(), newSpec, old)
	if newSpec.Generation != 5 {
		t.Fatalf("spec update: generation %d, want 5", newSpec.Generation)
	}
}

func TestStatusStrategyKeepsSpecAndLabels(t *testing.T) {
	status := statusStrategy[gateway.TailscaleEndpoints, *gateway.TailscaleEndpoints]{endpointsStrategy()}
	old := endpoints()
	obj := endpoints()
	obj.Spec.Tailnet = "changed"
	obj.Labels = map[string]string{"changed": "yes"}
	obj.Status.HealthyEndpoints = 2
	status.PrepareForUpdate(context.Background(), obj, old)
	if obj.Spec.Tailnet != "company.ts.net" || obj.Labels != nil || obj.Status.HealthyEndpoints != 2 || obj.Generation != 4 {
		t.Fatalf("got spec %+v labels %v status %+v generation %d", obj.Spec, obj.Labels, obj.Status, obj.Generation)
	}
}

func TestTableConvertor(t *testing.T) {
	c := tableConvertor[gateway.TailscaleEndpoints, *gateway.TailscaleEndpoints]{kind: TailscaleEndpoints}
	list := &gateway.TailscaleEndpointsList{ListMeta: metav1.ListMeta{ResourceVersion: "7"}, Items: []gateway.TailscaleEndpoints{*endpoints()}}
	table, err := c.ConvertToTable(context.Background(), list, nil)
	if err != nil {
		t.Fatal(err)
	}
	var headers []string
	for _, col := range table.ColumnDefinitions {
		headers = append(headers, col.Name)
	}
	wantHeaders := []string{"Name", "Tailnet", "Endpoints", "Healthy", "Ready", "Age", "Addresses", "Protocols"}
	if len(headers) != len(wantHeaders) {
		t.Fatalf("headers %v, want %v", headers, wantHeaders)
	}
	for i := range wantHeaders {
		if headers[i] != wantHeaders[i] {
			t.Fatalf("headers %v, want %v", headers, wantHeaders)
		}
	}
	want := []any{"web", "company.ts.net", int64(2), int64(1), "Unknown", "3d", "100.64.0.1,100.64.0.2", "HTTP,TCP"}
	row := table.Rows[0].Cells
	for i := range want {
		if row[i] != want[i] {
			t.Fatalf("row %v, want %v", row, want)
		}
	}
	if table.ResourceVersion != "7" {
		t.Fatalf("resourceVersion %q", table.ResourceVersion)
	}

	noHeaders, err := c.ConvertToTable(context.Background(), endpoints(), &metav1.TableOptions{NoHeaders: true})
	if err != nil || len(noHeaders.ColumnDefinitions) != 0 || len(noHeaders.Rows) != 1 {
		t.Fatalf("single object without headers: %+v %v", noHeaders, err)
	}
}

func TestTablesOfEveryKind(t *testing.T) {
	ctx := context.Background()
	for name, rows := range map[string]func() ([]any, error){
		"tailnet": func() ([]any, error) {
			tb, err := tableConvertor[gateway.TailscaleTailnet, *gateway.TailscaleTailnet]{kind: TailscaleTailnets}.ConvertToTable(ctx,
				&gateway.TailscaleTailnet{Spec: gateway.TailscaleTailnetSpec{Tailnet: "-"}, Status: gateway.TailscaleTailnetStatus{
					DeviceCount: 3, Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}}}}, nil)
			return tb.Rows[0].Cells, err
		},
		"services": func() ([]any, error) {
			tb, err := tableConvertor[gateway.TailscaleServices, *gateway.TailscaleServices]{kind: TailscaleServices}.ConvertToTable(ctx,
				&gateway.TailscaleServices{Spec: gateway.TailscaleServicesSpec{VIPService: &gateway.VIPServiceSpec{Name: "svc:web"}},
					Status: gateway.TailscaleServicesStatus{Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse}}}}, nil)
			return tb.Rows[0].Cells, err
		},
	} {
		cells, err := rows()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		switch name {
		case "tailnet":
			if cells[1] != "-" || cells[2] != "True" || cells[3] != int64(3) {
				t.Errorf("tailnet row %v", cells)
			}
		case "services":
			if cells[1] != "svc:web" || cells[2] != "round-robin" || cells[3] != int64(0) || cells[5] != "False" {
				t.Errorf("services row %v", cells)
			}
		}
	}
}
