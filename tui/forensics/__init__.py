"""After-the-fact investigation of a failing test: the test order per worker and the tests
that ran before it (suspects), bisecting them, and the text of those findings."""
