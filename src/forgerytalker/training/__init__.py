"""Two-stage ForgeryTalker training with Accelerate (`accelerate launch training/run.py ...`)."""
