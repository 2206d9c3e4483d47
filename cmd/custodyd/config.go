package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// configHelp is the --help section on config files.
const configHelp = `Config file (--config FILE):
  One setting a line, "key = value", where the key is a flag's name without
  its dashes (data, http, nats, id-scope, log-format, v, ...). Lines starting
  with # are comments; blank lines are ignored. A value may be written in
  double quotes, as in Go, for an empty value (nats = "") or surrounding
  spaces. Flags on the command line win over the file. An unknown key, a bad
  value, a key set twice and a missing file are refused at start.
  Example: deploy/custodyd.conf.example.
`

// configError is a config file refused.
type configError struct{ error }

// parseWithConfig parses the command line args into fset and then, if they
// name a config file in *config (--config), reads it beneath them: a flag
// on the command line wins over the file. The flag package prints its own
// errors; the config file's are configErrors.
func parseWithConfig(fset *flag.FlagSet, args []string, config *string) error {
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *config == "" {
		return nil
	}
	if err := loadConfig(fset, *config); err != nil {
		return configError{err}
	}
	return fset.Parse(args) // parsed once already: it cannot fail
}

// loadConfig sets the flags of fset from the config file at path
// (configHelp); parse the command line again after it, for its flags to
// win. Every error is a sentence naming the file and, for what is in it,
// the line and the key.
func loadConfig(fset *flag.FlagSet, path string) error {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("config file %s (--config): cannot read it: %w", path, err)
	}
	defer f.Close()
	seen := map[string]int{} // key → line
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		at := fmt.Sprintf("config file %s, line %d", path, line)
		name, value, ok := strings.Cut(text, "=")
		if !ok {
			return fmt.Errorf("%s: %q is not a setting: write key = value", at, text)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		fl := fset.Lookup(name)
		switch {
		case name == "":
			return fmt.Errorf("%s: no key before the =", at)
		case name == "config":
			return fmt.Errorf("%s: key %q: a config file cannot name another", at, name)
		case fl == nil:
			hint := "the keys are custodyd's flag names: " + strings.Join(flagNames(fset), ", ")
			if strings.HasPrefix(name, "-") {
				hint = "write the flag's name without dashes: " + strings.TrimLeft(name, "-")
			}
			return fmt.Errorf("%s: unknown key %q (%s)", at, name, hint)
		}
		if first, ok := seen[name]; ok {
			return fmt.Errorf("%s: key %q is set again (first on line %d)", at, name, first)
		}
		seen[name] = line
		if strings.HasPrefix(value, `"`) {
			v, err := strconv.Unquote(value)
			if err != nil {
				return fmt.Errorf("%s: key %q: the value %s is not a well-formed quoted string", at, name, value)
			}
			value = v
		}
		if err := fset.Set(name, value); err != nil {
			return fmt.Errorf("%s: key %q: bad value %q: %v", at, name, value, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

func flagNames(fset *flag.FlagSet) []string {
	var names []string
	fset.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" {
			names = append(names, f.Name)
		}
	})
	return names
}
