"""What every ACE-Step generation shares: casting ops, weight files, audio files, LoRA merging, guidance math,
starting noise, progress and interruption."""
