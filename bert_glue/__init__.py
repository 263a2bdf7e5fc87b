"""Everything around the classic example at the repository's root (model_def.py, data.py,
constants.py, download_glue_data.py), grouped by job:

    trial/            what the trial is built from: its settings (trial_config, device),
                      metrics, padding-free batches (packing), fast CPU dropout, model checks
                      (pretrained), own data (custom_task), checkpoint callbacks (callbacks),
                      early stopping on a plateau (early_stopping)
    results/          checkpoints: found and resumed (checkpointing), loaded back as models
                      (finetuned), and a GLUE experiment's trials collected (glue_results)
    local/            a run on this machine: Determined's Trainer in local mode (local_run), a grid
                      config's trials in turn (local_grid), the progress bars and summary (progress)
    determined_0_38/  what Determined 0.38.1 lacks, each piece saying what it works around and
                      when it can go (searcher_stop, boundary_stop, workarounds)
    container/        the trial's container on a cluster: its versions check (versions) and pip
                      install under the image's pins (image_pins), run by startup-hook.sh

Nothing here imports torch or transformers at package import: container/ must run before either.
"""
