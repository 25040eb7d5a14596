package aggregate_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The domain is the bottom layer: its packages import nothing of
// orderflow's but the domain itself (the registry of streams and events,
// which needs the event store, is assembled in eventstore/streams).
func TestTheDomainImportsOnlyTheDomain(t *testing.T) {
	const module, domain = "github.com/orderflow/orderflow/", "github.com/orderflow/orderflow/domain"
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, module) && p != domain && !strings.HasPrefix(p, domain+"/") {
				t.Errorf("%s imports %s", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
