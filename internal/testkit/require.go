// Package testkit is test support shared by tokenwatch's packages: it locates or starts the real
// components (Kafka 4.4, the ClickHouse engine, Prometheus, Alertmanager) and decides whether a
// test that needs a missing one is skipped or fails.
package testkit

import (
	"os"
	"testing"
)

// RequireComponentsEnv, set to 1, turns every skip for a missing component into a failure: CI
// sets it so that a machine without Kafka or the engine cannot pass by skipping the tests that
// matter.
const RequireComponentsEnv = "TOKENWATCH_REQUIRE_COMPONENTS"

// Require reports that the component what is missing and how to get it. It skips the test on a
// developer's machine, and fails it when TOKENWATCH_REQUIRE_COMPONENTS=1.
func Require(t testing.TB, what, how string) {
	t.Helper()
	if os.Getenv(RequireComponentsEnv) == "1" {
		t.Fatalf("%s is required (%s=1) but missing: %s", what, RequireComponentsEnv, how)
	}
	t.Skipf("%s is missing: %s (set %s=1 to fail instead of skipping)", what, how, RequireComponentsEnv)
}
