package asyncapi

// The JSON Schemas of the messages' payloads, reflected from their Go
// types, with the personal fields (sealed by the bus) marked by the
// pattern of a sealed value.

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/invopop/jsonschema"
)

// reflector reflects Go types to self-contained JSON Schemas: no
// references, fields without omitempty required, and unknown fields
// allowed (a field added within a schema version is not a break).
func reflector() *jsonschema.Reflector {
	return &jsonschema.Reflector{
		DoNotReference:            true,
		AllowAdditionalProperties: true,
		Anonymous:                 true,
		Mapper: func(t reflect.Type) *jsonschema.Schema {
			if t == reflect.TypeFor[uuid.UUID]() {
				return &jsonschema.Schema{Type: "string", Format: "uuid"}
			}
			return nil
		},
	}
}

func reflectSchema(t reflect.Type) (*jsonschema.Schema, error) {
	s := reflector().ReflectFromType(t)
	s.Version, s.ID = "", ""
	if s.Type == "" && s.Properties == nil {
		return nil, fmt.Errorf("type %s has no schema", t)
	}
	return s, nil
}

// payloadSchema is the schema of payload v (a pointer to a struct), with
// its personal fields marked: those personal returns (the fields of v the
// bus seals) and those of every struct type with a PersonalFields method.
func payloadSchema(v any, personal []*string) (*jsonschema.Schema, error) {
	s, err := reflectSchema(reflect.TypeOf(v).Elem())
	if err != nil {
		return nil, err
	}
	paths, err := personalPaths(reflect.ValueOf(v).Elem(), personal)
	if err != nil {
		return nil, err
	}
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		if err := markPersonal(s, strings.Split(p, ".")); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// markPersonal marks the property at path as a sealed personal field.
func markPersonal(s *jsonschema.Schema, path []string) error {
	for i, name := range path {
		if s.Properties == nil {
			return fmt.Errorf("personal field %s: no property %s", strings.Join(path, "."), name)
		}
		next, ok := s.Properties.Get(name)
		if !ok {
			return fmt.Errorf("personal field %s: no property %s", strings.Join(path, "."), name)
		}
		s = next
		if i == len(path)-1 {
			if s.Type != "string" {
				return fmt.Errorf("personal field %s is not a string", strings.Join(path, "."))
			}
			s.Pattern = SealedPattern
			s.Description = "personal: sealed with the customer's key (pii:1:…); unreadable to consumers"
			if s.Extras == nil {
				s.Extras = map[string]any{}
			}
			s.Extras["x-personal"] = true
		}
	}
	return nil
}

type personalFielder interface{ PersonalFields() []*string }

// personalPaths finds the JSON paths of the personal fields of the struct
// v: the string fields whose pointers personal returns, or a
// PersonalFields method of v or of a struct nested in it.
func personalPaths(v reflect.Value, personal []*string) (map[string]bool, error) {
	strs := map[*string]string{}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		if pf, ok := v.Addr().Interface().(personalFielder); ok {
			personal = append(personal, pf.PersonalFields()...)
		}
		for i := range v.NumField() {
			f, fv := v.Type().Field(i), v.Field(i)
			name := jsonName(f)
			if name == "" {
				continue
			}
			switch fv.Kind() {
			case reflect.String:
				strs[fv.Addr().Interface().(*string)] = prefix + name
			case reflect.Struct:
				walk(fv, prefix+name+".")
			}
		}
	}
	walk(v, "")
	out := map[string]bool{}
	for _, p := range personal {
		path, ok := strs[p]
		if !ok {
			return nil, fmt.Errorf("a personal field of %s is not one of its string fields", v.Type())
		}
		out[path] = true
	}
	return out, nil
}

func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return name
}
