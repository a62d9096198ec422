package proxy

import "testing"

// The bucket fills up to its cap of 100 retries and no further, however
// many requests deposit, and refills as requests keep coming.
func TestRetryBudgetBucketCap(t *testing.T) {
	b := newRetryBudget(0.2, 0) // five requests earn a retry; no free floor
	for range 1000 {
		b.deposit()
	}
	if got := b.tokens.Load(); got != b.capMilli {
		t.Fatalf("after 1000 requests the bucket holds %d, want the cap %d", got, b.capMilli)
	}
	for i := range 100 {
		if !b.withdraw() {
			t.Fatalf("retry %d of a full bucket refused", i+1)
		}
	}
	if b.withdraw() {
		t.Fatal("a 101st retry went ahead on an empty bucket")
	}
	for range 5 {
		b.deposit()
	}
	if !b.withdraw() {
		t.Fatal("five more requests did not earn a retry")
	}
	if b.withdraw() {
		t.Fatal("five requests earned more than one retry")
	}
}
