"""hotshot's daemon: watches shot folders, keeps state in SQLite, hands jobs to render workers."""
