package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// registeredFamilies returns the metric families named tailscale_gateway_* that the Go code
// under dir (tests excluded) defines: Opts literals with Namespace, Subsystem and Name, and
// metrics.NewDesc / prometheus.NewDesc calls.
func registeredFamilies(t *testing.T, dir string) map[string]string {
	t.Helper()
	families := map[string]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			var name string
			switch n := n.(type) {
			case *ast.CompositeLit:
				parts := map[string]string{}
				for _, e := range n.Elts {
					kv, ok := e.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					key, ok := kv.Key.(*ast.Ident)
					if !ok {
						continue
					}
					if lit, ok := kv.Value.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						parts[key.Name], _ = strconv.Unquote(lit.Value)
					}
				}
				if parts["Name"] == "" {
					return true
				}
				var joined []string
				for _, k := range []string{"Namespace", "Subsystem", "Name"} {
					if parts[k] != "" {
						joined = append(joined, parts[k])
					}
				}
				name = strings.Join(joined, "_")
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "NewDesc" && len(n.Args) > 0 {
					if lit, ok := n.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						name, _ = strconv.Unquote(lit.Value)
					}
				}
			}
			if strings.HasPrefix(name, "tailscale_gateway_") {
				pos := fset.Position(n.Pos())
				rel, _ := filepath.Rel(dir, pos.Filename)
				families[name] = filepath.ToSlash(rel) + ":" + strconv.Itoa(pos.Line)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return families
}

var familyRE = regexp.MustCompile(`tailscale_gateway_[a-z0-9_]*[a-z0-9]`)

// TestMetricsPageListsEveryFamily checks docs/operations/metrics.md against the code: every
// family the code registers is documented, and every family the page names exists.
func TestMetricsPageListsEveryFamily(t *testing.T) {
	root := repoRoot(t)
	code := registeredFamilies(t, filepath.Join(root, "pkg"))
	if len(code) < 20 {
		t.Fatalf("found only %d families in the code: %v", len(code), code)
	}
	page, err := os.ReadFile(filepath.Join(root, "docs", "operations", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range familyRE.FindAllString(string(page), -1) {
		documented[m] = true
	}
	var missing, unknown []string
	for f, pos := range code {
		if !documented[f] {
			missing = append(missing, f+" ("+pos+")")
		}
	}
	for f := range documented {
		if _, ok := code[f]; !ok {
			unknown = append(unknown, f)
		}
	}
	sort.Strings(missing)
	sort.Strings(unknown)
	if len(missing) > 0 {
		t.Errorf("families registered in the code but not in docs/operations/metrics.md:\n%s", strings.Join(missing, "\n"))
	}
	if len(unknown) > 0 {
		t.Errorf("families in docs/operations/metrics.md that the code does not register:\n%s", strings.Join(unknown, "\n"))
	}
}
