package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/orderflow/orderflow/asyncapi"
)

// runAsyncAPI prints the AsyncAPI document of the topics, or writes it to
// -o. Over an existing document (the committed baseline) it refuses a
// change that breaks consumers, naming the event and the field.
func runAsyncAPI(args []string) error {
	fs := flag.NewFlagSet("orderflow asyncapi", flag.ExitOnError)
	out := fs.String("o", "", "write the document to this file (e.g. "+asyncapi.CommittedPath+") instead of standard output")
	_ = fs.Parse(args)
	doc, err := asyncapi.JSON()
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = os.Stdout.Write(doc)
		return err
	}
	if old, err := os.ReadFile(*out); err == nil {
		breaks, err := asyncapi.Compatible(old, doc)
		if err != nil {
			return fmt.Errorf("compare with %s: %w", *out, err)
		}
		if len(breaks) > 0 {
			msg := fmt.Sprintf("%s not written: %d change(s) break consumers:", *out, len(breaks))
			for _, b := range breaks {
				msg += "\n  " + b.String()
			}
			return errors.New(msg)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.WriteFile(*out, doc, 0o644)
}
