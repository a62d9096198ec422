package upstream

import (
	"fmt"
	"strings"
)

// PolicyOption adjusts a policy made by PolicyByName.
type PolicyOption func(*policyOptions)

type policyOptions struct {
	fallback Selector
	cookie   CookieConfig
}

// WithFallback sets the policy that hash and cookie policies use for a
// request without a key (default random). Other policies ignore it.
func WithFallback(s Selector) PolicyOption {
	return func(o *policyOptions) { o.fallback = s }
}

// WithCookie configures the cookie policy (secret, max age). A name given as
// "cookie:NAME" takes precedence over cfg.Name; WithFallback over
// cfg.Fallback.
func WithCookie(cfg CookieConfig) PolicyOption {
	return func(o *policyOptions) { o.cookie = cfg }
}

// policyNames is the help text for policy names.
var policyNames = []string{
	"random", "p2c", "least_requests", "round_robin", "weighted_round_robin", "first",
	"ip_hash", "client_ip_hash", "uri_hash", "header:NAME", "query:NAME", "cookie", "cookie:NAME",
}

// PolicyNames lists the names PolicyByName accepts (NAME stands for a
// header, query parameter or cookie name).
func PolicyNames() []string { return append([]string(nil), policyNames...) }

// PolicyByName returns a new instance of the named policy (as used by
// --lb-policy and the config file). Each call returns fresh state: give
// every pool its own.
func PolicyByName(name string, opts ...PolicyOption) (Selector, error) {
	var o policyOptions
	for _, opt := range opts {
		opt(&o)
	}
	kind, arg, hasArg := strings.Cut(name, ":")
	if hasArg && arg == "" {
		return nil, fmt.Errorf("load-balancing policy %q needs a name after the colon, e.g. %s:X-User-ID", name, kind)
	}
	var hash *Hash
	switch kind {
	case "random", "p2c", "least_requests", "round_robin", "weighted_round_robin", "first", "ip_hash", "client_ip_hash", "uri_hash":
		if hasArg {
			return nil, fmt.Errorf("load-balancing policy %q takes no argument; valid policies: %s", name, strings.Join(policyNames, ", "))
		}
	}
	switch kind {
	case "random":
		return Random{}, nil
	case "p2c":
		return P2C{}, nil
	case "least_requests":
		return LeastRequests{}, nil
	case "round_robin":
		return &RoundRobin{}, nil
	case "weighted_round_robin":
		return &WeightedRoundRobin{}, nil
	case "first":
		return First{}, nil
	case "ip_hash":
		hash = NewIPHash()
	case "client_ip_hash":
		hash = NewClientIPHash()
	case "uri_hash":
		hash = NewURIHash()
	case "header":
		if !hasArg {
			return nil, fmt.Errorf("load-balancing policy %q needs a header name, e.g. header:X-User-ID", name)
		}
		if !isToken(arg) {
			return nil, fmt.Errorf("load-balancing policy %q: %q is not a valid header name", name, arg)
		}
		hash = NewHeaderHash(arg)
	case "query":
		if !hasArg {
			return nil, fmt.Errorf("load-balancing policy %q needs a query parameter name, e.g. query:user", name)
		}
		hash = NewQueryHash(arg)
	case "cookie":
		cfg := o.cookie
		if hasArg {
			if !isToken(arg) {
				return nil, fmt.Errorf("load-balancing policy %q: %q is not a valid cookie name", name, arg)
			}
			cfg.Name = arg
		}
		if o.fallback != nil {
			cfg.Fallback = o.fallback
		}
		return NewCookie(cfg), nil
	default:
		return nil, fmt.Errorf("unknown load-balancing policy %q; valid policies: %s", name, strings.Join(policyNames, ", "))
	}
	hash.Fallback = o.fallback
	return hash, nil
}

// isToken reports whether s is an RFC 9110 token (header and cookie names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
