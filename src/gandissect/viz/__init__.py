"""Pictures for people: the self-contained HTML report (and later the painter)."""
