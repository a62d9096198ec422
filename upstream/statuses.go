package upstream

import (
	"fmt"
	"strconv"
	"strings"
)

// Statuses is a set of HTTP statuses. An entry from 1 to 5 stands for a
// whole class (5 = any 5xx); any other entry is an exact code. Build one by
// hand or with ParseStatuses("5xx", "429").
type Statuses []int

// Match reports whether code is in the set.
func (s Statuses) Match(code int) bool {
	for _, m := range s {
		if m == code || (m >= 1 && m <= 5 && code/100 == m) {
			return true
		}
	}
	return false
}

// String renders the set the way ParseStatuses reads it.
func (s Statuses) String() string {
	parts := make([]string, len(s))
	for i, m := range s {
		if m >= 1 && m <= 5 {
			parts[i] = strconv.Itoa(m) + "xx"
		} else {
			parts[i] = strconv.Itoa(m)
		}
	}
	return strings.Join(parts, ",")
}

// ParseStatuses reads codes ("503") and classes ("5xx"); each argument may
// also be a comma-separated list.
func ParseStatuses(specs ...string) (Statuses, error) {
	var out Statuses
	for _, spec := range specs {
		for _, f := range strings.Split(spec, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			if len(f) == 3 && (f[1:] == "xx" || f[1:] == "XX") && f[0] >= '1' && f[0] <= '5' {
				out = append(out, int(f[0]-'0'))
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil || n < 100 || n > 599 {
				return nil, fmt.Errorf("invalid HTTP status %q: want a code from 100 to 599 or a class like 2xx", f)
			}
			out = append(out, n)
		}
	}
	return out, nil
}

// validate checks a hand-built set.
func (s Statuses) validate(field string) error {
	for _, m := range s {
		if (m < 1 || m > 5) && (m < 100 || m > 599) {
			return fmt.Errorf("%s: invalid status %d: want a code from 100 to 599 or a class 1-5 (meaning 1xx-5xx)", field, m)
		}
	}
	return nil
}
