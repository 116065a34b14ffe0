"""Run control: the run-folder protocol (spawn, detach, cancel, resume, events), history, sweeps."""
