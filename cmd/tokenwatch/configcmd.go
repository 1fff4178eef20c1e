package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tokenwatch/tokenwatch/config"
)

// configFlags are the flags every command that reads the config file shares.
type configFlags struct {
	path string
	set  stringList
}

func (c *configFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.path, "config", os.Getenv("TOKENWATCH_CONFIG"), "config file (YAML); env TOKENWATCH_CONFIG")
	fs.Var(&c.set, "set", "override one key, e.g. --set kafka.brokers=host:9092 (repeatable); env TOKENWATCH_<KEY> also works")
}

func (c *configFlags) load() (config.Config, error) {
	return config.Load(c.path, os.Environ(), c.set)
}

func configCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "check" && args[0] != "keys") {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			fmt.Fprint(stdout, `Usage: tokenwatch config check [--config FILE] [--set key=value ...]
       tokenwatch config keys

check validates the config (file, then TOKENWATCH_* environment, then --set flags)
and prints the effective config with secrets masked. Errors name the key and what
is expected. keys lists every key and the environment variable that sets it.
`)
			return nil
		}
		return usagef("want 'config check' or 'config keys'")
	}
	if args[0] == "keys" {
		for _, k := range config.Keys() {
			fmt.Fprintf(stdout, "%-40s %s\n", k, config.EnvName(k))
		}
		return nil
	}
	var cf configFlags
	fs := newFlags("config check", "[--config FILE] [--set key=value ...]",
		"Validate the config and print the effective config with secrets masked.", stdout, stderr)
	cf.register(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c, err := cf.load()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "# config OK; effective values (secrets masked):")
	for _, l := range c.Lines() {
		fmt.Fprintln(stdout, l)
	}
	return nil
}
