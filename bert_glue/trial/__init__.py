"""What the trial is built from: its settings, own data's task, the levers and the device they
run on, batches, fast dropout, metrics, the starting weights, callbacks, checkpoints."""
