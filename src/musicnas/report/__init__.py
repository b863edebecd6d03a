"""Self-contained HTML reports of searches and trained models."""
