"""Everything around the classic example at the repository's root (model_def.py, data.py,
constants.py, download_glue_data.py), grouped by job:

    trial/            what the trial is built from: its settings, built and checked once
                      (settings), own data's task (custom_task), the levers resolved for a
                      device (levers) and checked on it (device), batches (batching), fast
                      dropout, metrics, the starting weights (pretrained), callbacks and
                      reducers (callbacks), checkpoints found and read (checkpointing)
    results/          checkpoints loaded back as models (finetuned), test predictions
                      (predictions), a GLUE experiment's trials collected (glue_results), its
                      table (glue_table) and report (report)
    local/            a run on this machine: the command line (cli), its config file read and
                      overridden (config), Determined's Trainer in local mode (local_run), a
                      grid config's trials in turn (local_grid), the progress bars and summary
                      (progress)
    determined_0_38/  what Determined 0.38.1 lacks (workarounds), each piece saying what it
                      works around and when it can go
    container/        the trial's container on a cluster: its versions check (versions) and pip
                      install under the image's pins (image_pins), run by startup-hook.sh

Nothing here imports torch or transformers at package import: container/ must run before either.
"""
