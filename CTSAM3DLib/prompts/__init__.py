"""prompts layer of CTSAM3DLib."""
