"""Investigation of what went wrong: the test order per worker and the tests that ran
before a failing test (suspects), bisecting them, a live worker's stacks on demand
(``testmon dump``), and the text of those findings."""
