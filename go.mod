module github.com/sluiceproxy/sluice

go 1.26.0

require golang.org/x/net v0.62.0

require (
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
