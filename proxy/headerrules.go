package proxy

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// HeaderRule edits one header: sets it to Value, or deletes it when Delete
// is true.
type HeaderRule struct {
	Name   string
	Value  string
	Delete bool
}

// ParseHeaderRule parses "Name: value" (set) or "-Name" (delete), the form
// of the --header-up / --header-down flags.
func ParseHeaderRule(s string) (HeaderRule, error) {
	if name, ok := strings.CutPrefix(s, "-"); ok {
		r := HeaderRule{Name: strings.TrimSpace(name), Delete: true}
		return r, r.validate()
	}
	name, value, ok := strings.Cut(s, ":")
	if !ok {
		return HeaderRule{}, fmt.Errorf("header rule %q: want \"Name: value\" to set or \"-Name\" to delete", s)
	}
	r := HeaderRule{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)}
	return r, r.validate()
}

func (r HeaderRule) validate() error {
	if !httpguts.ValidHeaderFieldName(r.Name) {
		return fmt.Errorf("header rule: %q is not a valid header name", r.Name)
	}
	if !r.Delete && !httpguts.ValidHeaderFieldValue(r.Value) {
		return fmt.Errorf("header rule %s: value %q contains a control character", r.Name, r.Value)
	}
	return nil
}

func applyHeaderRules(h http.Header, rules []HeaderRule) {
	for i := range rules {
		r := &rules[i]
		k := textproto.CanonicalMIMEHeaderKey(r.Name)
		if r.Delete {
			delete(h, k)
		} else {
			h[k] = []string{r.Value}
		}
	}
}
