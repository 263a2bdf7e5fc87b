"""The trial's container on a cluster: startup-hook.sh runs these before anything heavy."""
