"""The AudioChat model: tokenizer, transformer, the SCT and its ablations, diffusion, the forcing
loss, constrained decoding."""
