package server

import "testing"

// fastLoopAllocBudget is the most allocations the fast HTTP/1.1 loop may
// spend on one keep-alive small GET (handler and client allocate nothing),
// with the slow-client watch on as by default. Allocation counts are
// stable where times are not: this fails when a change adds allocations to
// the server's hot path. Lower it when you remove some; raise it only with
// a reason in the commit message.
const fastLoopAllocBudget = 6

func TestAllocBudgetFastLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a warm connection")
	}
	if forceStdHTTP1 {
		t.Skip("SLUICE_TEST_STDSERVER=1: the fast loop is off")
	}
	roundTrip := smallGETClient(t, Options{})
	for range 10 {
		roundTrip()
	}
	got := testing.AllocsPerRun(200, roundTrip)
	t.Logf("fast loop small GET: %.1f allocs/request (budget %d)", got, fastLoopAllocBudget)
	if got > fastLoopAllocBudget {
		t.Fatalf("the fast loop costs %.1f allocations per small GET, budget is %d: find the new one with "+
			"go test -run xxx -bench FastLoopSmallGET/fast -memprofile m.prof ./internal/server/", got, fastLoopAllocBudget)
	}
}
