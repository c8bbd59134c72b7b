package registry

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

var objectMetaDescriptions = metav1.ObjectMeta{}.SwaggerDoc()

// tableConvertor renders a kind's columns for kubectl: NAME first, the kind's own columns, AGE last.
type tableConvertor[T any, PT Object[T]] struct {
	kind *Kind[T, PT]
}

var _ rest.TableConvertor = tableConvertor[gateway.TailscaleEndpoints, *gateway.TailscaleEndpoints]{}

func (c tableConvertor[T, PT]) ConvertToTable(_ context.Context, obj runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	// kubectl shows columns in order: the kind's default columns, AGE, then the -o wide ones.
	defaults := 0
	for defaults < len(c.kind.Columns) && c.kind.Columns[defaults].Priority == 0 {
		defaults++
	}
	table := &metav1.Table{}
	if opts, ok := tableOptions.(*metav1.TableOptions); !ok || !opts.NoHeaders {
		table.ColumnDefinitions = append(table.ColumnDefinitions,
			metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name", Description: objectMetaDescriptions["name"]})
		table.ColumnDefinitions = append(table.ColumnDefinitions, c.kind.Columns[:defaults]...)
		table.ColumnDefinitions = append(table.ColumnDefinitions,
			metav1.TableColumnDefinition{Name: "Age", Type: "string", Description: objectMetaDescriptions["creationTimestamp"]})
		table.ColumnDefinitions = append(table.ColumnDefinitions, c.kind.Columns[defaults:]...)
	}
	addRow := func(item runtime.Object) error {
		o := item.(PT)
		kindCells := c.kind.Cells(o)
		cells := make([]any, 0, len(kindCells)+2)
		cells = append(cells, o.GetName())
		cells = append(cells, kindCells[:defaults]...)
		cells = append(cells, age(o.GetCreationTimestamp()))
		cells = append(cells, kindCells[defaults:]...)
		table.Rows = append(table.Rows, metav1.TableRow{Cells: cells, Object: runtime.RawExtension{Object: item}})
		return nil
	}
	if meta.IsListType(obj) {
		if err := meta.EachListItem(obj, addRow); err != nil {
			return nil, err
		}
		if l, err := meta.ListAccessor(obj); err == nil {
			table.ResourceVersion = l.GetResourceVersion()
			table.Continue = l.GetContinue()
			table.RemainingItemCount = l.GetRemainingItemCount()
		}
		return table, nil
	}
	if err := addRow(obj); err != nil {
		return nil, err
	}
	if m, err := meta.Accessor(obj); err == nil {
		table.ResourceVersion = m.GetResourceVersion()
	}
	return table, nil
}

func age(created metav1.Time) string {
	if created.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(created.Time))
}
