// Package settings registers a command's settings once each: its flag, the
// environment variable that is its default, and the default itself, on the
// subcommands that use it (others keep the value without showing the flag
// in -h). A value that does not parse is remembered, so start-up stops
// naming the variable instead of silently falling back to the default.
// Both binaries read their configuration through it: orderflow's roles and
// tools, and the harness.
package settings

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
)

// Set is the settings of one subcommand.
type Set struct {
	fs   *flag.FlagSet
	cmd  string
	errs []error
}

// New registers settings on fs for subcommand cmd.
func New(fs *flag.FlagSet, cmd string) *Set { return &Set{fs: fs, cmd: cmd} }

// Err is every environment value that did not parse.
func (s *Set) Err() error { return errors.Join(s.errs...) }

// Everyone: a setting every subcommand shows.
var Everyone = []string(nil)

func (s *Set) lookup(env string) (string, bool) {
	v, ok := os.LookupEnv(env)
	return v, ok && v != ""
}

func (s *Set) bad(env, v, what string) {
	s.errs = append(s.errs, fmt.Errorf("%s=%q is not %s", env, v, what))
}

// shown reports whether this subcommand shows the flag.
func (s *Set) shown(on []string) bool { return on == nil || slices.Contains(on, s.cmd) }

// define registers one setting of type T: the variable env, parsed, is
// the default in place of def.
func define[T any](s *Set, p *T, name, env string, def T, usage string, on []string, parse func(string) (T, error), what string) {
	if v, ok := s.lookup(env); ok {
		if x, err := parse(v); err != nil {
			s.bad(env, v, what)
		} else {
			def = x
		}
	}
	*p = def
	if !s.shown(on) {
		return
	}
	usage += " (" + env + ")"
	switch q := any(p).(type) { // the flag package's own kinds: -h names them
	case *string:
		s.fs.StringVar(q, name, *q, usage)
	case *int:
		s.fs.IntVar(q, name, *q, usage)
	case *float64:
		s.fs.Float64Var(q, name, *q, usage)
	case *bool:
		s.fs.BoolVar(q, name, *q, usage)
	case *time.Duration:
		s.fs.DurationVar(q, name, *q, usage)
	default:
		panic(fmt.Sprintf("setting %s: no flag kind for %T", name, p))
	}
}

// Str is a text setting shown on the subcommands on (nil: every one).
func (s *Set) Str(p *string, name, env, def, usage string, on []string) {
	define(s, p, name, env, def, usage, on, func(v string) (string, error) { return v, nil }, "text")
}

// Int is an integer setting.
func (s *Set) Int(p *int, name, env string, def int, usage string, on []string) {
	define(s, p, name, env, def, usage, on, strconv.Atoi, "an integer")
}

// Float is a number setting.
func (s *Set) Float(p *float64, name, env string, def float64, usage string, on []string) {
	define(s, p, name, env, def, usage, on, func(v string) (float64, error) { return strconv.ParseFloat(v, 64) }, "a number")
}

// Bool is a true-or-false setting.
func (s *Set) Bool(p *bool, name, env string, def bool, usage string, on []string) {
	define(s, p, name, env, def, usage, on, strconv.ParseBool, "true or false")
}

// Duration is a duration setting.
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, usage string, on []string) {
	define(s, p, name, env, def, usage, on, time.ParseDuration, "a duration such as 250ms or 24h")
}
