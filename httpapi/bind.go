package httpapi

import (
	"fmt"
	"math"
	"net/http"
	"reflect"
	"strings"

	"github.com/labstack/echo/v4"
)

// bind sets v (a pointer) from the request's body as checkBody decoded it
// and validate checked it against its schema: the handler's typed request
// without a second parse of the body.
func bind(c echo.Context, v any) error {
	b, ok := c.Get(bodyKey).(checked)
	if !ok {
		return problem(http.StatusBadRequest, "malformed_json", "the body is empty")
	}
	if err := assign(reflect.ValueOf(v).Elem(), b.value, ""); err != nil {
		return problem(http.StatusBadRequest, "malformed_json", err.Error())
	}
	return nil
}

// assign sets dst from v, a value as json.Unmarshal decodes into any, the
// way json.Unmarshal would set dst from the same JSON: objects into
// structs by json tag, arrays into slices, strings, booleans, whole
// numbers into integers, anything into an interface; null leaves dst as
// it is. Keys without a field are skipped: every schema of a body refuses
// them (additionalProperties: false) before a handler binds it.
func assign(dst reflect.Value, v any, path string) error {
	if v == nil {
		return nil
	}
	switch dst.Kind() {
	case reflect.Interface:
		if dst.NumMethod() == 0 {
			dst.Set(reflect.ValueOf(v))
			return nil
		}
	case reflect.String:
		if s, ok := v.(string); ok {
			dst.SetString(s)
			return nil
		}
	case reflect.Bool:
		if b, ok := v.(bool); ok {
			dst.SetBool(b)
			return nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		// Integers are bounded by their schemas well within float64's 2^53.
		if f, ok := v.(float64); ok && f == math.Trunc(f) && f >= math.MinInt64 && f < math.MaxInt64 && !dst.OverflowInt(int64(f)) {
			dst.SetInt(int64(f))
			return nil
		}
	case reflect.Slice:
		if a, ok := v.([]any); ok {
			s := reflect.MakeSlice(dst.Type(), len(a), len(a))
			for i, e := range a {
				if err := assign(s.Index(i), e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
			dst.Set(s)
			return nil
		}
	case reflect.Struct:
		if m, ok := v.(map[string]any); ok {
			t := dst.Type()
			for i := range t.NumField() {
				f := t.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				if !f.IsExported() || name == "-" {
					continue
				}
				if name == "" {
					name = f.Name
				}
				if e, ok := m[name]; ok {
					if err := assign(dst.Field(i), e, join(path, name)); err != nil {
						return err
					}
				}
			}
			return nil
		}
	}
	return fmt.Errorf("%s: cannot set a %s from %s", orBody(path), dst.Type(), describe(v))
}

func describe(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case float64:
		return fmt.Sprintf("the number %v", v)
	default:
		return fmt.Sprintf("%q", fmt.Sprint(v))
	}
}
