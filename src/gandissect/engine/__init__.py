"""The engine: the sample pass every tool rides on, collectives for torchrun, run folders and atomic storage."""
