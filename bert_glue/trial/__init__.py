"""What the trial is built from: settings, metrics, batches, model checks, own data."""
