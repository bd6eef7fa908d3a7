"""ACE-Step v1 (3.5B): the linear-attention DiT with its Conformer lyric encoder, the music DCAE with its vocoder,
UMT5, the multilingual lyric front end, the official schedulers, sampler and pipeline."""
