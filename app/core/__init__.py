"""Service plumbing: settings, logging, errors, metrics, the loaded model."""
