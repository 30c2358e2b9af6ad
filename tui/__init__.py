"""testmon-live's viewer side: the `testmon` command, reports, and the Textual dashboard."""
