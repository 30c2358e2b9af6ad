"""The Textual dashboard (`testmon tui`, `testmon replay`): the app, its screens and widgets,
the sources it reads (a live hub or a recorded log) and the ingest thread. The only room of
the viewer side that imports Textual or Rich."""
