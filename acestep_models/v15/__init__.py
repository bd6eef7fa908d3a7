"""ACE-Step 1.5: the DiT (turbo, base, sft, XL) with its condition encoder and FSQ audio tokenizer, the Oobleck VAE
at 25 Hz, the Qwen3-Embedding text encoder and the official prompt formats."""
