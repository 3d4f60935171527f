package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// envName is the environment variable that sets a flag: --part-target is
// RELAYMESH_PART_TARGET.
func envName(flag string) string {
	return "RELAYMESH_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnvAndConfig fills every flag not given on the command line from its
// environment variable, then from the YAML file named by --config. Command
// line beats environment beats file beats default.
func applyEnvAndConfig(fs *pflag.FlagSet) error {
	file := map[string]any{}
	path, _ := fs.GetString("config")
	if !fs.Changed("config") {
		if v, ok := os.LookupEnv(envName("config")); ok {
			path = v
		}
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		if err := yaml.Unmarshal(data, &file); err != nil {
			return fmt.Errorf("--config %s: not valid YAML: %w", path, err)
		}
		var unknown []string
		for k := range file {
			if f := fs.Lookup(k); f == nil || k == "config" {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Errorf("--config %s: unknown key %q (keys are flag names, e.g. http, part-target)", path, unknown[0])
		}
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "config" {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			s := fmt.Sprint(v)
			if v == nil {
				s = "" // "srt:" in YAML disables the listener, like --srt ""
			}
			if list, isList := v.([]any); isList {
				parts := make([]string, len(list))
				for i, x := range list {
					parts[i] = fmt.Sprint(x)
				}
				s = strings.Join(parts, ",")
			}
			if e := fs.Set(f.Name, s); e != nil {
				err = fmt.Errorf("--config key %s: %q: %w", f.Name, s, e)
			}
		}
	})
	return err
}
